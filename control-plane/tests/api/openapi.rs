use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::*;

/// Every route the router serves, with its method.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/openapi.json"),
    ("post", "/v1/accounts"),
    ("get", "/v1/accounts"),
    ("get", "/v1/accounts/{id}"),
    ("patch", "/v1/accounts/{id}"),
    ("post", "/v1/accounts/{id}/keys"),
    ("get", "/v1/accounts/{id}/keys"),
    ("delete", "/v1/keys/{key_id}"),
    ("patch", "/v1/keys/{key_id}"),
    ("post", "/v1/accounts/{id}/credits"),
    ("get", "/v1/accounts/{id}/ledger"),
    ("post", "/v1/accounts/{id}/password-link"),
    ("get", "/v1/accounts/{id}/usage"),
    ("get", "/v1/accounts/{id}/usage/daily"),
    ("get", "/v1/accounts/{id}/webhook-events"),
    ("get", "/v1/reports/margin"),
    ("get", "/v1/me"),
    ("get", "/v1/me/usage"),
    ("get", "/v1/plans"),
    ("post", "/v1/plans"),
    ("patch", "/v1/plans/{id}"),
    ("get", "/v1/prices"),
    ("put", "/v1/prices/{model}"),
    ("get", "/v1/audit"),
    ("get", "/internal/v1/snapshot"),
    ("post", "/internal/v1/debits"),
    ("post", "/internal/v1/keys/lookup"),
    ("post", "/internal/v1/snapshot"),
    ("post", "/v1/accounts/{id}/purchases"),
    ("get", "/v1/accounts/{id}/purchases"),
    ("get", "/v1/purchases/{id}"),
    ("post", "/v1/purchases/{id}/confirm"),
    ("post", "/v1/purchases/{id}/reject"),
    ("post", "/v1/purchases/{id}/refund"),
    ("post", "/v1/webhooks/stripe"),
    ("post", "/v1/webhooks/nowpayments"),
    ("get", "/checkout/complete"),
    ("get", "/checkout/cancelled"),
    ("get", "/v1/accounts/{id}/billing"),
    ("put", "/v1/accounts/{id}/billing"),
    ("get", "/v1/invoices/{number}"),
    ("get", "/v1/accounts/{id}/invoices"),
    ("get", "/v1/me/purchases"),
    ("get", "/v1/me/invoices"),
];

/// Resolves a local `$ref` ("#/components/schemas/X") in the document.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

fn check_refs(doc: &Value, v: &Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                assert!(resolve(doc, r).is_some(), "dangling $ref {r}");
            }
            map.values().for_each(|x| check_refs(doc, x));
        }
        Value::Array(items) => items.iter().for_each(|x| check_refs(doc, x)),
        _ => {}
    }
}

#[tokio::test]
async fn openapi_document_is_valid_openapi_3_and_lists_every_route() {
    let app = spawn_app().await;
    let (s, doc) = send(app.req(Method::GET, "/openapi.json")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in ROUTES {
        let op = &paths.get(*path).unwrap_or_else(|| panic!("{path} missing"))[*method];
        assert!(op.is_object(), "{method} {path} missing");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path} has no responses"
        );
        for param in op["parameters"].as_array().into_iter().flatten() {
            assert!(
                param["name"].is_string() && param["in"].is_string(),
                "{method} {path}: {param}"
            );
        }
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        ROUTES.len(),
        "the document lists a route the test does not know"
    );
    check_refs(&doc, &doc);
    // Every documented route is served: none answers 404 for "no such route".
    for (method, path) in ROUTES {
        let concrete = path
            .replace("{id}", &uuid::Uuid::new_v4().to_string())
            .replace("{key_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{model}", "m")
            .replace("{number}", "INV-2026-000001");
        let (_, b) = send(app.req(method.parse().unwrap(), &concrete)).await;
        assert!(
            !b["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("no such route"),
            "{method} {path} not served"
        );
    }
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for s in ["admin_token", "internal_token", "api_key"] {
        assert!(schemes.contains_key(s), "{s}");
    }
}

/// The December 2026 fields are documented: the modifiers and the code execution fee of a price
/// (read and written), and what a usage row adds.
#[tokio::test]
async fn openapi_documents_modifiers_fees_and_the_usage_fields() {
    let app = spawn_app().await;
    let (_, doc) = send(app.req(Method::GET, "/openapi.json")).await;
    let schema = |name: &str| {
        doc["components"]["schemas"][name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("schema {name} missing"))
            .clone()
    };
    for (name, fields) in [
        (
            "PriceView",
            &["speed", "inference_geo", "code_execution_usd_per_request"][..],
        ),
        (
            "PriceChange",
            &["speed", "inference_geo", "code_execution_usd_per_request"],
        ),
        ("ModifierView", &["value", "multiplier", "credits_per_token"]),
        (
            "UsageView",
            &["speed", "inference_geo", "service_tier", "iterations"],
        ),
        (
            "IterationView",
            &["type", "model", "input_tokens", "cache_write_1h_tokens"],
        ),
    ] {
        let props = schema(name);
        for f in fields {
            assert!(props.contains_key(*f), "{name}.{f} not documented");
        }
    }
}
