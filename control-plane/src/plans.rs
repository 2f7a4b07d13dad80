//! Credit plans: the four seeded by the first migration, listed publicly; admins add plans and
//! rename or retire them. A plan's credits and price never change once created (purchases refer to
//! it): to change terms, add a plan and retire the old one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::accounts::check_text;
use crate::audit::{self, Audit};
use crate::auth::Admin;
use crate::error::{constraint_of, ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::money::{self, Amount};
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Plan {
    pub id: Uuid,
    pub name: String,
    #[serde(serialize_with = "money::ser")]
    #[schema(value_type = String, example = "10000")]
    pub credits: Decimal,
    #[serde(serialize_with = "money::ser")]
    #[schema(value_type = String, example = "50")]
    pub price_usd: Decimal,
    pub active: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlanList {
    pub data: Vec<Plan>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPlan {
    pub name: String,
    #[schema(value_type = String)]
    pub credits: Amount,
    /// USD, at most 2 fractional digits.
    #[schema(value_type = String)]
    pub price_usd: Amount,
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanPatch {
    #[serde(default)]
    pub name: Option<String>,
    /// `false` retires the plan (it can no longer be bought); `true` offers it again.
    #[serde(default)]
    pub active: Option<bool>,
}

const SELECT: &str = "SELECT id, name, credits, price_usd, active FROM plans";

fn name_taken(e: sqlx::Error) -> ApiError {
    if constraint_of(&e) == Some("plans_name_key") {
        ApiError::conflict("a plan with that name exists")
    } else {
        e.into()
    }
}

/// Every plan, the cheapest first (public).
#[utoipa::path(get, path = "/v1/plans", tag = "plans", responses((status = 200, body = PlanList)))]
async fn list_plans(State(state): State<AppState>) -> ApiResult<Json<PlanList>> {
    let data: Vec<Plan> = sqlx::query_as(&format!("{SELECT} ORDER BY price_usd, name"))
        .fetch_all(&state.pool)
        .await?;
    Ok(Json(PlanList { data }))
}

/// Adds a plan.
#[utoipa::path(post, path = "/v1/plans", tag = "plans", request_body = NewPlan,
    security(("admin_token" = [])),
    responses((status = 201, body = Plan), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_plan(
    admin: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewPlan>,
) -> ApiResult<(StatusCode, Json<Plan>)> {
    let name = check_text("name", &body.name, 200)?;
    let credits = money::canonical(body.credits.0);
    let price = money::canonical(body.price_usd.0);
    if credits <= Decimal::ZERO {
        return Err(ApiError::invalid("credits must be positive"));
    }
    if price <= Decimal::ZERO || price.scale() > 2 {
        return Err(ApiError::invalid(
            "price_usd must be positive with at most 2 fractional digits",
        ));
    }
    let mut tx = state.pool.begin().await?;
    let plan: Plan = sqlx::query_as(
        "INSERT INTO plans (id, name, credits, price_usd, active) VALUES ($1, $2, $3, $4, $5)
         RETURNING id, name, credits, price_usd, active",
    )
    .bind(Uuid::new_v4())
    .bind(&name)
    .bind(credits)
    .bind(price)
    .bind(body.active)
    .fetch_one(&mut *tx)
    .await
    .map_err(name_taken)?;
    let audit = Audit {
        actor: &admin.actor,
        action: "plan.create",
        target: format!("plan:{}", plan.id),
        reason: None,
        details: serde_json::json!({ "name": name, "credits": money::plain(credits),
            "price_usd": money::plain(price), "active": body.active }),
    };
    audit::record(&mut tx, audit).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(plan)))
}

/// Renames, retires or re-offers a plan.
#[utoipa::path(patch, path = "/v1/plans/{id}", tag = "plans", request_body = PlanPatch,
    params(("id" = Uuid, Path, description = "plan id")),
    security(("admin_token" = [])),
    responses((status = 200, body = Plan), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn patch_plan(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<PlanPatch>,
) -> ApiResult<Json<Plan>> {
    let name = body
        .name
        .as_deref()
        .map(|n| check_text("name", n, 200))
        .transpose()?;
    if name.is_none() && body.active.is_none() {
        return Err(ApiError::invalid("nothing to change: send name and/or active"));
    }
    let mut tx = state.pool.begin().await?;
    let plan: Plan = sqlx::query_as(
        "UPDATE plans SET name = coalesce($2, name), active = coalesce($3, active), updated_at = now()
         WHERE id = $1 RETURNING id, name, credits, price_usd, active",
    )
    .bind(id)
    .bind(&name)
    .bind(body.active)
    .fetch_optional(&mut *tx)
    .await
    .map_err(name_taken)?
    .ok_or_else(|| ApiError::not_found(format!("plan {id} not found")))?;
    let audit = Audit {
        actor: &admin.actor,
        action: "plan.update",
        target: format!("plan:{id}"),
        reason: None,
        details: serde_json::json!({ "name": name, "active": body.active }),
    };
    audit::record(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(Json(plan))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_plans, create_plan))
        .routes(routes!(patch_plan))
}
