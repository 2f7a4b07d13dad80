//! Customer self-service with the customer's own API key: balance and usage.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Customer;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::ApiQuery;
use crate::money;
use crate::state::AppState;
use crate::usage::{self, UsageQuery, UsageScope};

#[derive(Debug, Serialize, ToSchema)]
pub struct MeKey {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub account_id: Uuid,
    pub name: String,
    /// `active` or `suspended`.
    pub status: String,
    #[serde(serialize_with = "money::ser")]
    #[schema(value_type = String, example = "1000")]
    pub balance: Decimal,
    /// The key this request was made with.
    pub key: MeKey,
}

/// The caller's account and balance.
#[utoipa::path(get, path = "/v1/me", tag = "me",
    security(("api_key" = []), ("customer_bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
async fn me(customer: Customer, State(state): State<AppState>) -> ApiResult<Json<Me>> {
    let mut conn = state.pool.acquire().await?;
    let account = crate::accounts::fetch(&mut conn, customer.account_id).await?;
    Ok(Json(Me {
        account_id: account.id,
        name: account.name,
        status: account.status,
        balance: account.balance,
        key: MeKey {
            id: customer.key_id,
            name: customer.key_name,
            prefix: customer.key_prefix,
        },
    }))
}

/// The caller's usage, newest first (same shape and parameters as the admin listing).
#[utoipa::path(get, path = "/v1/me/usage", tag = "me", params(UsageQuery),
    security(("api_key" = []), ("customer_bearer" = [])),
    responses((status = 200, body = crate::page::Page<usage::UsageView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn me_usage(
    customer: Customer,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Response> {
    let scope = UsageScope {
        account_id: customer.account_id,
        show_list_usd: false,
    };
    usage::list(&state.pool, scope, q, &headers).await
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(me)).routes(routes!(me_usage))
}
