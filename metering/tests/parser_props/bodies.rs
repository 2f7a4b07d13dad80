//! Strategies for realistic bodies: Anthropic messages and streams, OpenAI completions and
//! streams, request bodies, with varied counts (some invalid), content and key order.

use super::render::{render, Node, Style};
use metering::usage::MAX_COUNT;
use metering::{Iteration, Usage};
use proptest::prelude::*;

pub(crate) fn count() -> BoxedStrategy<u64> {
    prop_oneof![8 => 0u64..2_000, 4 => 0u64..10_000_000, 1 => Just(MAX_COUNT), 1 => Just(MAX_COUNT + 1)]
        .boxed()
}

/// A count field: absent, null, a count, or (rarely) something that is not a count.
pub(crate) fn field(key: &'static str) -> BoxedStrategy<Option<(&'static str, Node)>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some((key, Node::Raw("null")))),
        8 => count().prop_map(move |n| Some((key, Node::Int(n)))),
        1 => prop_oneof![Just("-1"), Just("2.5"), Just("1e2"), Just("\"7\"")].prop_map(move |r| Some((key, Node::Raw(r)))),
    ]
    .boxed()
}

pub(crate) fn text() -> BoxedStrategy<String> {
    prop_oneof![
        "[a-z \"\\\\]{0,24}",
        "(?s).{0,16}",
        Just("usage \"input_tokens\": 5".to_owned())
    ]
    .boxed()
}

pub(crate) fn object(fields: Vec<Option<(&'static str, Node)>>) -> impl Strategy<Value = Node> {
    Just(fields.into_iter().flatten().collect::<Vec<_>>())
        .prop_shuffle()
        .prop_map(Node::Obj)
}

pub(crate) fn anthropic_usage() -> BoxedStrategy<Node> {
    let split = (
        field("ephemeral_5m_input_tokens"),
        field("ephemeral_1h_input_tokens"),
    )
        .prop_flat_map(|(a, b)| object(vec![a, b]));
    let tools = (field("web_search_requests"), field("web_fetch_requests"))
        .prop_flat_map(|(a, b)| object(vec![a, b]));
    let details = field("thinking_tokens").prop_flat_map(|t| object(vec![t]));
    (
        (
            field("input_tokens"),
            field("output_tokens"),
            field("cache_creation_input_tokens"),
        ),
        (
            field("cache_read_input_tokens"),
            prop::option::of(split),
            prop::option::of(tools),
        ),
        (prop::option::of(details), prop::option::of("[a-z]{1,10}")),
        (
            prop::option::of(modifier(&["standard", "fast"])),
            prop::option::of(modifier(&["global", "us", "not_available"])),
            prop::option::of(prop::collection::vec(iteration(), 0..4)),
        ),
    )
        .prop_flat_map(
            |((i, o, cc), (cr, split, tools), (details, tier), (speed, geo, steps))| {
                object(vec![
                    i,
                    o,
                    cc,
                    cr,
                    split.map(|s| ("cache_creation", s)),
                    tools.map(|t| ("server_tool_use", t)),
                    details.map(|d| ("output_tokens_details", d)),
                    tier.map(|t| ("service_tier", Node::Str(t))),
                    speed.map(|s| ("speed", s)),
                    geo.map(|g| ("inference_geo", g)),
                    steps.map(|s| ("iterations", Node::Arr(s))),
                ])
            },
        )
        .boxed()
}

/// A modifier's value: a known one, another string, or (rarely) null.
fn modifier(known: &'static [&'static str]) -> BoxedStrategy<Node> {
    prop_oneof![
        6 => prop::sample::select(known).prop_map(|v| Node::Str(v.to_owned())),
        1 => "[a-z_]{1,12}".prop_map(Node::Str),
        1 => Just(Node::Raw("null")),
    ]
    .boxed()
}

/// One step of `usage.iterations`: a known or other type, a model or none, counts and a split.
fn iteration() -> BoxedStrategy<Node> {
    let kind = prop_oneof![
        prop::sample::select(&["compaction", "message", "advisor_message", "fallback_message"][..])
            .prop_map(|k| Some(("type", Node::Str(k.to_owned())))),
        "[a-z_]{1,12}".prop_map(|k| Some(("type", Node::Str(k)))),
        Just(None),
    ];
    let split = (
        field("ephemeral_5m_input_tokens"),
        field("ephemeral_1h_input_tokens"),
    )
        .prop_flat_map(|(a, b)| object(vec![a, b]));
    (
        kind,
        prop::option::of("claude-[a-z0-9-]{1,16}"),
        (field("input_tokens"), field("output_tokens")),
        (
            field("cache_creation_input_tokens"),
            field("cache_read_input_tokens"),
            prop::option::of(split),
        ),
    )
        .prop_flat_map(|(kind, model, (i, o), (cc, cr, split))| {
            object(vec![
                kind,
                model.map(|m| ("model", Node::Str(m))),
                i,
                o,
                cc,
                cr,
                split.map(|s| ("cache_creation", s)),
            ])
        })
        .boxed()
}

pub(crate) fn content_block() -> BoxedStrategy<Node> {
    prop_oneof![
        text().prop_map(|t| Node::Obj(vec![("type", Node::Str("text".into())), ("text", Node::Str(t))])),
        text().prop_map(|t| Node::Obj(vec![
            ("type", Node::Str("thinking".into())),
            ("thinking", Node::Str(t))
        ])),
        (text(), count()).prop_map(|(t, n)| Node::Obj(vec![
            ("type", Node::Str("tool_use".into())),
            (
                "input",
                Node::Obj(vec![
                    ("usage", Node::Obj(vec![("input_tokens", Node::Int(n))])),
                    ("q", Node::Str(t))
                ])
            ),
        ])),
    ]
    .boxed()
}

pub(crate) fn anthropic_message() -> BoxedStrategy<Node> {
    (
        anthropic_usage(),
        prop::collection::vec(content_block(), 0..4),
        "[a-z0-9-]{1,30}",
        "msg_[A-Za-z0-9]{1,20}",
    )
        .prop_flat_map(|(usage, content, model, id)| {
            object(vec![
                Some(("id", Node::Str(id))),
                Some(("type", Node::Str("message".into()))),
                Some(("model", Node::Str(model))),
                Some(("content", Node::Arr(content))),
                Some(("stop_reason", Node::Raw("null"))),
                Some(("usage", usage)),
            ])
        })
        .boxed()
}

/// The usage a message body reports, read with serde_json and the billing rules.
pub(crate) fn expected_usage(body: &str) -> Option<Usage> {
    let doc: serde_json::Value = serde_json::from_str(body).ok()?;
    let count = |pointer: &str| {
        doc.pointer(pointer)
            .and_then(serde_json::Value::as_u64)
            .filter(|n| *n <= MAX_COUNT)
    };
    let get = |pointer: &str| count(pointer).unwrap_or(0);
    let (m5, h1) = (
        count("/usage/cache_creation/ephemeral_5m_input_tokens"),
        count("/usage/cache_creation/ephemeral_1h_input_tokens"),
    );
    let total = get("/usage/cache_creation_input_tokens");
    let (write_5m, write_1h) = match (m5, h1) {
        (None, None) => (total, 0),
        (m5, h1) => {
            let (m5, h1) = (m5.unwrap_or(0), h1.unwrap_or(0));
            (m5 + total.saturating_sub(m5 + h1), h1)
        }
    };
    let text = |pointer: &str| doc.pointer(pointer).and_then(|t| t.as_str()).map(str::to_owned);
    let iterations = doc
        .pointer("/usage/iterations")
        .and_then(|steps| steps.as_array())
        .map(|steps| {
            steps
                .iter()
                .filter(|s| s.is_object())
                .map(expected_step)
                .collect()
        })
        .unwrap_or_default();
    Some(Usage {
        input_tokens: get("/usage/input_tokens"),
        output_tokens: get("/usage/output_tokens"),
        thinking_tokens: get("/usage/output_tokens_details/thinking_tokens"),
        cache_write_5m_tokens: write_5m,
        cache_write_1h_tokens: write_1h,
        cache_read_tokens: get("/usage/cache_read_input_tokens"),
        web_search_requests: get("/usage/server_tool_use/web_search_requests"),
        web_fetch_requests: get("/usage/server_tool_use/web_fetch_requests"),
        service_tier: text("/usage/service_tier"),
        speed: text("/usage/speed"),
        inference_geo: text("/usage/inference_geo"),
        iterations,
    })
}

/// One step of `usage.iterations`, read with serde_json and the same cache split rule.
fn expected_step(step: &serde_json::Value) -> Iteration {
    let count = |pointer: &str| {
        step.pointer(pointer)
            .and_then(serde_json::Value::as_u64)
            .filter(|n| *n <= MAX_COUNT)
    };
    let get = |pointer: &str| count(pointer).unwrap_or(0);
    let total = get("/cache_creation_input_tokens");
    let (write_5m, write_1h) = match (
        count("/cache_creation/ephemeral_5m_input_tokens"),
        count("/cache_creation/ephemeral_1h_input_tokens"),
    ) {
        (None, None) => (total, 0),
        (m5, h1) => {
            let (m5, h1) = (m5.unwrap_or(0), h1.unwrap_or(0));
            (m5 + total.saturating_sub(m5 + h1), h1)
        }
    };
    Iteration {
        kind: step
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or_default()
            .to_owned(),
        model: step.get("model").and_then(|m| m.as_str()).map(str::to_owned),
        input_tokens: get("/input_tokens"),
        output_tokens: get("/output_tokens"),
        cache_write_5m_tokens: write_5m,
        cache_write_1h_tokens: write_1h,
        cache_read_tokens: get("/cache_read_input_tokens"),
    }
}

/// One SSE event: its `event:` name and its data rendered as JSON (or a raw line).
#[derive(Clone, Debug)]
pub(crate) enum Sse {
    Event(&'static str, Node),
    Comment,
    Done,
}

pub(crate) fn delta(kind: &'static str, key: &'static str, t: String) -> Sse {
    Sse::Event(
        "content_block_delta",
        Node::Obj(vec![
            ("type", Node::Str("content_block_delta".into())),
            ("index", Node::Int(0)),
            (
                "delta",
                Node::Obj(vec![("type", Node::Str(kind.into())), (key, Node::Str(t))]),
            ),
        ]),
    )
}

pub(crate) fn typed(kind: &'static str, mut rest: Vec<(&'static str, Node)>) -> Sse {
    rest.insert(0, ("type", Node::Str(kind.into())));
    Sse::Event(kind, Node::Obj(rest))
}

pub(crate) fn anthropic_middle_event() -> BoxedStrategy<Sse> {
    prop_oneof![
        text().prop_map(|t| delta("text_delta", "text", t)),
        text().prop_map(|t| delta("thinking_delta", "thinking", t)),
        text().prop_map(|t| delta("input_json_delta", "partial_json", t)),
        Just(typed("ping", vec![])),
        Just(typed("content_block_stop", vec![("index", Node::Int(0))])),
        Just(Sse::Comment),
        Just(typed(
            "error",
            vec![(
                "error",
                Node::Obj(vec![("type", Node::Str("overloaded_error".into()))])
            )]
        )),
        anthropic_usage().prop_map(|u| typed("future_event", vec![("usage", u)])),
    ]
    .boxed()
}

pub(crate) fn anthropic_stream() -> BoxedStrategy<Vec<Sse>> {
    (
        anthropic_usage(),
        "[a-z0-9-]{1,30}",
        prop::collection::vec(anthropic_middle_event(), 0..6),
        prop::option::of(anthropic_usage()),
        any::<bool>(),
    )
        .prop_map(|(start, model, middle, end_usage, stop)| {
            let message = Node::Obj(vec![
                ("id", Node::Str("msg_1".into())),
                ("model", Node::Str(model)),
                ("usage", start),
            ]);
            let mut events = vec![typed("message_start", vec![("message", message)])];
            events.extend(middle);
            if let Some(u) = end_usage {
                events.push(typed(
                    "message_delta",
                    vec![("delta", Node::Obj(vec![])), ("usage", u)],
                ));
            }
            if stop {
                events.push(typed("message_stop", vec![]));
            }
            events
        })
        .boxed()
}

pub(crate) fn render_sse(
    events: &[Sse],
    style: &(Style, &'static [&'static str]),
    eol: &str,
    named: bool,
) -> String {
    let mut out = String::new();
    for event in events {
        match event {
            Sse::Comment => out.push_str(&format!(": keep-alive{eol}")),
            Sse::Done => out.push_str(&format!("data: [DONE]{eol}{eol}")),
            Sse::Event(name, data) => {
                if named {
                    out.push_str(&format!("event: {name}{eol}"));
                }
                let data = render(data, style).replace('\n', &format!("{eol}data:"));
                out.push_str(&format!("data: {data}{eol}{eol}"));
            }
        }
    }
    out
}

pub(crate) fn eol() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("\n"), Just("\r\n"), Just("\r")]
}

pub(crate) fn openai_usage() -> BoxedStrategy<Node> {
    (
        field("prompt_tokens"),
        field("completion_tokens"),
        field("cached_tokens"),
        field("reasoning_tokens"),
    )
        .prop_flat_map(|(p, c, cached, reasoning)| {
            let prompt_details = Node::Obj(cached.into_iter().collect());
            let completion_details = Node::Obj(reasoning.into_iter().collect());
            object(vec![
                p,
                c,
                Some(("prompt_tokens_details", prompt_details)),
                Some(("completion_tokens_details", completion_details)),
            ])
        })
        .boxed()
}

pub(crate) fn openai_choice(key: &'static str) -> BoxedStrategy<Node> {
    (text(), prop::option::of(text()))
        .prop_map(move |(content, reasoning)| {
            let mut message = vec![("content", Node::Str(content))];
            if let Some(r) = reasoning {
                message.push(("reasoning_content", Node::Str(r)));
            }
            Node::Arr(vec![Node::Obj(vec![
                ("index", Node::Int(0)),
                (key, Node::Obj(message)),
            ])])
        })
        .boxed()
}

pub(crate) fn openai_completion() -> BoxedStrategy<Node> {
    (openai_usage(), openai_choice("message"), "[a-z0-9-]{1,20}")
        .prop_flat_map(|(usage, choices, model)| {
            object(vec![
                Some(("id", Node::Str("chatcmpl-1".into()))),
                Some(("model", Node::Str(model))),
                Some(("choices", choices)),
                Some(("usage", usage)),
            ])
        })
        .boxed()
}

pub(crate) fn openai_stream() -> BoxedStrategy<Vec<Sse>> {
    (
        prop::collection::vec(openai_choice("delta"), 0..5),
        prop::option::of(openai_usage()),
        any::<bool>(),
    )
        .prop_map(|(choices, usage, done)| {
            let chunk = |choices: Node, usage: Node| {
                Sse::Event(
                    "",
                    Node::Obj(vec![
                        ("model", Node::Str("gpt-4o".into())),
                        ("choices", choices),
                        ("usage", usage),
                    ]),
                )
            };
            let mut events: Vec<Sse> = choices.into_iter().map(|c| chunk(c, Node::Raw("null"))).collect();
            if let Some(u) = usage {
                events.push(chunk(Node::Arr(vec![]), u));
            }
            if done {
                events.push(Sse::Done);
            }
            events
        })
        .boxed()
}

pub(crate) fn request_body() -> BoxedStrategy<Node> {
    let messages = prop::collection::vec(text(), 0..4).prop_map(|texts| {
        Node::Arr(
            texts
                .into_iter()
                .map(|t| {
                    Node::Obj(vec![
                        ("role", Node::Str("user".into())),
                        ("content", Node::Str(t)),
                        ("model", Node::Int(1)),
                    ])
                })
                .collect(),
        )
    });
    let fallback = prop_oneof![
        "claude-[a-z0-9-]{1,12}".prop_map(Node::Str),
        "claude-[a-z0-9-]{1,12}".prop_map(|m| Node::Obj(vec![("model", Node::Str(m))])),
    ];
    let tool = (
        prop::sample::select(
            &[
                "code_execution_20250825",
                "web_search_20260209",
                "web_fetch_20260209",
                "advisor_20260301",
                "custom",
            ][..],
        ),
        prop::option::of("claude-[a-z0-9-]{1,12}"),
    )
        .prop_flat_map(|(kind, model)| {
            object(vec![
                Some(("type", Node::Str(kind.to_owned()))),
                model.map(|m| ("model", Node::Str(m))),
                Some((
                    "input_schema",
                    Node::Obj(vec![
                        ("type", Node::Str("object".into())),
                        ("model", Node::Int(3)),
                    ]),
                )),
            ])
        });
    (
        (
            messages,
            prop::option::of("[a-z0-9-]{1,40}"),
            prop::option::of(any::<bool>()),
            prop::option::of(count()),
            any::<bool>(),
        ),
        (
            prop::option::of(modifier(&["standard", "fast"])),
            prop::option::of(modifier(&["global", "us"])),
            prop::option::of(prop::collection::vec(fallback, 0..3)),
            prop::option::of(prop::collection::vec(tool, 0..4)),
        ),
    )
        .prop_flat_map(
            |((messages, model, stream, max_tokens, options), (speed, geo, fallbacks, tools))| {
                object(vec![
                    Some(("messages", messages)),
                    model.map(|m| ("model", Node::Str(m))),
                    stream.map(|s| ("stream", Node::Raw(if s { "true" } else { "false" }))),
                    max_tokens.map(|n| ("max_tokens", Node::Int(n))),
                    options.then(|| {
                        (
                            "stream_options",
                            Node::Obj(vec![("include_usage", Node::Raw("true"))]),
                        )
                    }),
                    speed.map(|s| ("speed", s)),
                    geo.map(|g| ("inference_geo", g)),
                    fallbacks.map(|f| ("fallbacks", Node::Arr(f))),
                    tools.map(|t| ("tools", Node::Arr(t))),
                ])
            },
        )
        .boxed()
}
