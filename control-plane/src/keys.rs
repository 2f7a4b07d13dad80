//! Customer API keys: create (the secret is returned once), list without secrets, revoke (admin).
//! Only the SHA-256 hash and the display prefix are stored.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use metering::apikey;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::accounts::check_text;
use crate::audit::{self, Audit};
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::page::{paginate, Page, PageParams};
use crate::{sync, AppState};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
}

/// The creation response: the only place the secret ever appears.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    pub id: Uuid,
    pub account_id: Uuid,
    pub name: String,
    /// The secret. Shown once; store it now.
    pub key: String,
    /// The first characters of the key, shown in listings.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Key {
    pub id: Uuid,
    pub account_id: Uuid,
    pub name: String,
    pub prefix: String,
    /// `active` or `revoked`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Issues a key for an account.
#[utoipa::path(post, path = "/v1/accounts/{id}/keys", tag = "keys", request_body = NewKey,
    params(("id" = Uuid, Path, description = "account id")),
    security(("admin_token" = [])),
    responses((status = 201, body = CreatedKey), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_key(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(account_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<NewKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let name = check_text("name", &body.name, 200)?;
    let mut random = [0u8; apikey::RANDOM_BYTES];
    rand::rng().fill_bytes(&mut random);
    let secret = apikey::generate(&random);
    let prefix = apikey::display_prefix(&secret).to_owned();
    let id = Uuid::new_v4();
    let mut tx = state.pool.begin().await?;
    let exists: Option<Uuid> = sqlx::query_scalar("SELECT id FROM accounts WHERE id = $1")
        .bind(account_id)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Err(ApiError::not_found(format!("account {account_id} not found")));
    }
    let audit = Audit {
        actor: &admin.actor,
        action: "key.create",
        target: format!("key:{id}"),
        reason: None,
        details: serde_json::json!({ "account_id": account_id, "name": name, "prefix": prefix }),
    };
    audit::record(&mut tx, audit).await?;
    let version = sync::bump(&mut tx).await?;
    let created_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO api_keys (id, account_id, name, key_hash, prefix, sync_version)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at",
    )
    .bind(id)
    .bind(account_id)
    .bind(&name)
    .bind(apikey::hash(&secret))
    .bind(&prefix)
    .bind(version)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            id,
            account_id,
            name,
            key: secret,
            prefix,
            created_at,
        }),
    ))
}

/// The account's keys, newest first, without secrets.
#[utoipa::path(get, path = "/v1/accounts/{id}/keys", tag = "keys", params(("id" = Uuid, Path), PageParams),
    security(("admin_token" = [])),
    responses((status = 200, body = Page<Key>), (status = 404, body = ErrorBody)))]
async fn list_keys(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(account_id): ApiPath<Uuid>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Key>>> {
    let limit = page.limit()?;
    let after: Option<(DateTime<Utc>, Uuid)> = page.after()?;
    let mut conn = state.pool.acquire().await?;
    crate::accounts::fetch(&mut conn, account_id).await?;
    let rows: Vec<Key> = sqlx::query_as(
        "SELECT id, account_id, name, prefix, status, created_at, revoked_at FROM api_keys
         WHERE account_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
         ORDER BY created_at DESC, id DESC LIMIT $4",
    )
    .bind(account_id)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(paginate(rows, limit, |k| (k.created_at, k.id), |k| k)))
}

/// Revokes a key; gateways refuse it from their next snapshot on. Revoking twice is a no-op.
#[utoipa::path(delete, path = "/v1/keys/{key_id}", tag = "keys",
    params(("key_id" = Uuid, Path, description = "key id")),
    security(("admin_token" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_key(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(key_id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    let mut tx = state.pool.begin().await?;
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM api_keys WHERE id = $1 FOR NO KEY UPDATE")
            .bind(key_id)
            .fetch_optional(&mut *tx)
            .await?;
    match status.as_deref() {
        None => return Err(ApiError::not_found(format!("key {key_id} not found"))),
        Some("revoked") => return Ok(StatusCode::NO_CONTENT),
        Some(_) => {}
    }
    let audit = Audit {
        actor: &admin.actor,
        action: "key.revoke",
        target: format!("key:{key_id}"),
        reason: None,
        details: serde_json::json!({}),
    };
    audit::record(&mut tx, audit).await?;
    let version = sync::bump(&mut tx).await?;
    sqlx::query(
        "UPDATE api_keys SET status = 'revoked', revoked_at = now(), sync_version = $2 WHERE id = $1",
    )
    .bind(key_id)
    .bind(version)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
}
