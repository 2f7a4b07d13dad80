//! `GET /openapi.json`: the OpenAPI 3 description, generated from the same route definitions the
//! router serves (utoipa-axum collects each `#[utoipa::path]` as its route is added).

use std::sync::Arc;

use axum::{Extension, Json};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ClaudeStore control plane",
        description = "Prepaid-credit billing for the Claude API: accounts, keys, credit ledger, usage, prices, \
            plans, and the internal sync API for the gateways. Errors use Anthropic's shape \
            {\"type\":\"error\",\"error\":{\"type\":...,\"message\":...}}; amounts are decimal strings; lists are \
            {\"data\": [...], \"next_cursor\": ...}."
    ),
    modifiers(&Security)
)]
struct BaseDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut OpenApiDoc) {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = || SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        components.add_security_scheme("admin_token", bearer());
        components.add_security_scheme("internal_token", bearer());
        components.add_security_scheme("customer_bearer", bearer());
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
    }
}

pub fn base() -> OpenApiDoc {
    BaseDoc::openapi()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "OpenAPI 3 document", body = serde_json::Value)))]
async fn openapi_json(Extension(doc): Extension<Arc<OpenApiDoc>>) -> Json<OpenApiDoc> {
    Json((*doc).clone())
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}
