//! Customer API keys: create (the secret is returned once), list without secrets, revoke (admin).
//! Only the SHA-256 hash and the display prefix are stored.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use metering::apikey;
use metering::keylimit::{check_model_pattern, LimitPeriod, MAX_ALLOWED_MODELS};
use rand::RngCore;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
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
use crate::state::AppState;
use crate::webhooks::events;
use crate::{money, sync};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
}

/// The creation response: the only place the secret ever appears.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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

/// A key's spending limit: at most `credits` per UTC calendar `period`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyLimit {
    #[serde(serialize_with = "money::ser", deserialize_with = "money::de_amount")]
    #[schema(value_type = String, example = "500")]
    pub credits: Decimal,
    /// `day`, `week` (from Monday), `month` or `total` (the key's whole life), in UTC.
    #[schema(value_type = String, example = "month")]
    pub period: LimitPeriod,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Key {
    pub id: Uuid,
    pub account_id: Uuid,
    pub name: String,
    pub prefix: String,
    /// `active` or `revoked`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// null: no limit beyond the account's balance.
    pub limit: Option<KeyLimit>,
    /// Model ids, families or prefixes ending in `*` the key may use; empty: every model.
    pub allowed_models: Vec<String>,
    /// From this instant on the key is refused; null: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether `expires_at` has passed.
    pub expired: bool,
    /// Credits spent in the limit's current period (without a limit: the current UTC month).
    #[serde(serialize_with = "money::ser")]
    #[schema(value_type = String, example = "12.5")]
    pub spend_this_period: Decimal,
    /// When the current period ends; null for `total`.
    pub period_resets_at: Option<DateTime<Utc>>,
    /// The admission time of the key's last billed request; null: never used.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// What to change; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    /// `null` removes the limit.
    #[serde(default, deserialize_with = "crate::extract::present")]
    #[schema(value_type = Option<KeyLimit>, nullable)]
    pub limit: Option<Option<KeyLimit>>,
    /// Replaces the list; `[]` allows every model.
    #[serde(default)]
    pub allowed_models: Option<Vec<String>>,
    /// `null`: the key never expires.
    #[serde(default, deserialize_with = "crate::extract::present")]
    #[schema(value_type = Option<DateTime<Utc>>, nullable)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

type KeyRow = (
    Uuid,
    Uuid,
    String,
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<Decimal>,
    Option<String>,
    Vec<String>,
    Option<DateTime<Utc>>,
    Decimal,
    Option<DateTime<Utc>>,
);

/// Keys with their period's spend and last use, as of `$1` (a timestamptz); the caller adds the
/// WHERE clause (keys `k`).
const KEY_SELECT: &str = "SELECT k.id, k.account_id, k.name, k.prefix, k.status, k.created_at, k.revoked_at,
        k.limit_credits, k.limit_period, k.allowed_models, k.expires_at,
        (SELECT coalesce(sum(u.cost), 0) FROM usage_records u
         WHERE u.key_id = k.id AND u.admitted_at >= key_period_start(coalesce(k.limit_period, 'month'), $1)),
        (SELECT max(u.admitted_at) FROM usage_records u WHERE u.key_id = k.id)
    FROM api_keys k";

fn key_of(row: KeyRow, now: DateTime<Utc>) -> Key {
    let (
        id,
        account_id,
        name,
        prefix,
        status,
        created_at,
        revoked_at,
        credits,
        period,
        allowed_models,
        expires_at,
        spent,
        last_used_at,
    ) = row;
    let limit = match (credits, period.as_deref().and_then(LimitPeriod::parse)) {
        (Some(credits), Some(period)) => Some(KeyLimit {
            credits: money::canonical(credits),
            period,
        }),
        _ => None,
    };
    let period = limit.as_ref().map_or(LimitPeriod::Month, |l| l.period);
    Key {
        id,
        account_id,
        name,
        prefix,
        status,
        created_at,
        revoked_at,
        limit,
        allowed_models,
        expired: expires_at.is_some_and(|e| e <= now),
        expires_at,
        spend_this_period: money::canonical(spent),
        period_resets_at: period.bounds(now).1,
        last_used_at,
    }
}

/// An account's keys as listed, newest first (at most `limit`).
pub async fn list_for_account(conn: &mut PgConnection, account_id: Uuid, limit: i64) -> ApiResult<Vec<Key>> {
    let now = Utc::now();
    let rows: Vec<KeyRow> = sqlx::query_as(&format!(
        "{KEY_SELECT} WHERE k.account_id = $2 ORDER BY k.created_at DESC, k.id DESC LIMIT $3"
    ))
    .bind(now)
    .bind(account_id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|r| key_of(r, now)).collect())
}

/// One key as listed.
pub async fn fetch_key(conn: &mut PgConnection, key_id: Uuid) -> ApiResult<Key> {
    let now = Utc::now();
    let row: Option<KeyRow> = sqlx::query_as(&format!("{KEY_SELECT} WHERE k.id = $2"))
        .bind(now)
        .bind(key_id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| key_of(r, now))
        .ok_or_else(|| ApiError::not_found(format!("key {key_id} not found")))
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
    let now = Utc::now();
    let rows: Vec<KeyRow> = sqlx::query_as(&format!(
        "{KEY_SELECT} WHERE k.account_id = $2 AND ($3::timestamptz IS NULL OR (k.created_at, k.id) < ($3, $4))
         ORDER BY k.created_at DESC, k.id DESC LIMIT $5"
    ))
    .bind(now)
    .bind(account_id)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    let rows: Vec<Key> = rows.into_iter().map(|r| key_of(r, now)).collect();
    Ok(Json(paginate(rows, limit, |k| (k.created_at, k.id), |k| k)))
}

/// Sets a key's limit, allowed models or expiry; gateways apply it from their next snapshot on
/// (within a sync period).
#[utoipa::path(patch, path = "/v1/keys/{key_id}", tag = "keys", request_body = KeyPatch,
    params(("key_id" = Uuid, Path, description = "key id")),
    security(("admin_token" = [])),
    responses((status = 200, body = Key), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn patch_key(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(key_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<KeyPatch>,
) -> ApiResult<Json<Key>> {
    let mut tx = state.pool.begin().await?;
    update_key(&mut tx, &state, &admin.actor, key_id, None, body).await?;
    let key = fetch_key(&mut tx, key_id).await?;
    tx.commit().await?;
    Ok(Json(key))
}

/// The largest limit a key may have (credits).
pub const MAX_LIMIT_CREDITS: i64 = 1_000_000_000_000;

/// Checks and applies a change of a key's limits in the caller's transaction, audited; `owner`:
/// the account the key must belong to (a customer changing its own key).
pub async fn update_key(
    conn: &mut PgConnection,
    state: &AppState,
    actor: &str,
    key_id: Uuid,
    owner: Option<Uuid>,
    body: KeyPatch,
) -> ApiResult<()> {
    if body.limit.is_none() && body.allowed_models.is_none() && body.expires_at.is_none() {
        return Err(ApiError::invalid(
            "nothing to change: give limit, allowed_models or expires_at",
        ));
    }
    if let Some(Some(l)) = &body.limit {
        if l.credits <= Decimal::ZERO || l.credits > Decimal::from(MAX_LIMIT_CREDITS) {
            return Err(ApiError::invalid(format!(
                "limit.credits must be above 0 and at most {MAX_LIMIT_CREDITS}"
            )));
        }
    }
    let models = match &body.allowed_models {
        Some(list) => {
            if list.len() > MAX_ALLOWED_MODELS {
                return Err(ApiError::invalid(format!(
                    "allowed_models lists at most {MAX_ALLOWED_MODELS} models"
                )));
            }
            let table = state.prices.latest(&mut *conn).await?;
            let mut models: Vec<String> = Vec::with_capacity(list.len());
            for m in list {
                let m = m.trim();
                check_model_pattern(&table, m).map_err(ApiError::invalid)?;
                if !models.iter().any(|x| x == m) {
                    models.push(m.to_owned());
                }
            }
            Some(models)
        }
        None => None,
    };
    let found: Option<(Uuid, String)> =
        sqlx::query_as("SELECT account_id, status FROM api_keys WHERE id = $1 FOR NO KEY UPDATE")
            .bind(key_id)
            .fetch_optional(&mut *conn)
            .await?;
    match found {
        Some((account, _)) if owner.is_none_or(|o| o == account) => {}
        _ => return Err(ApiError::not_found(format!("key {key_id} not found"))),
    }
    let now = Utc::now();
    let limit = body.limit.clone();
    let audit = Audit {
        actor,
        action: "key.update",
        target: format!("key:{key_id}"),
        reason: None,
        details: serde_json::json!({
            "limit": limit.as_ref().map(|l| l.as_ref().map(|l| serde_json::json!({
                "credits": money::plain(l.credits), "period": l.period.as_str() }))),
            "allowed_models": models,
            "expires_at": body.expires_at,
        }),
    };
    audit::record(&mut *conn, audit).await?;
    let version = sync::bump(&mut *conn).await?;
    let (set_limit, credits, period, resets) = match &limit {
        None => (false, None, None, None),
        Some(None) => (true, None, None, None),
        Some(Some(l)) => (
            true,
            Some(l.credits),
            Some(l.period.as_str()),
            l.period.bounds(now).1,
        ),
    };
    sqlx::query(
        "UPDATE api_keys SET sync_version = $2,
            limit_credits = CASE WHEN $3 THEN $4 ELSE limit_credits END,
            limit_period = CASE WHEN $3 THEN $5 ELSE limit_period END,
            limit_resets_at = CASE WHEN $3 THEN $6 ELSE limit_resets_at END,
            limit_alerted_for = CASE WHEN $3 THEN NULL ELSE limit_alerted_for END,
            allowed_models = coalesce($7, allowed_models),
            expires_at = CASE WHEN $8 THEN $9 ELSE expires_at END
         WHERE id = $1",
    )
    .bind(key_id)
    .bind(version)
    .bind(set_limit)
    .bind(credits)
    .bind(period)
    .bind(resets)
    .bind(models)
    .bind(body.expires_at.is_some())
    .bind(body.expires_at.flatten())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Re-versions the keys whose limit period ended, so that gateways get the new period's budget
/// with their next snapshot (called before each snapshot's first page: within a sync period of
/// the boundary). Keys another caller is rolling over are skipped.
pub async fn roll_over_periods(pool: &PgPool) -> ApiResult<u64> {
    let due: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys WHERE limit_resets_at <= now())")
            .fetch_one(pool)
            .await?;
    if !due {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM api_keys WHERE limit_resets_at <= now() ORDER BY id FOR NO KEY UPDATE SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let version = sync::bump(&mut tx).await?;
    let done = sqlx::query(
        "UPDATE api_keys SET sync_version = $2, limit_resets_at = key_period_end(limit_period, now())
         WHERE id = ANY($1)",
    )
    .bind(&ids)
    .bind(version)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(done)
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

/// Of `keys` (sorted), those with a limit, locked (before the sync version is taken, as a change
/// of a key does) for [`limits_spent`].
pub async fn lock_limited(conn: &mut PgConnection, keys: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM api_keys WHERE id = ANY($1) AND limit_credits IS NOT NULL ORDER BY id FOR NO KEY UPDATE",
    )
    .bind(keys)
    .fetch_all(conn)
    .await
}

/// After a debit batch spent on `limited` keys (their usage rows written at `version`): the keys are
/// re-versioned, so that the gateways' next snapshot carries their remaining budget, and a
/// `key.limit_reached` event is written for each whose period's spend just reached its limit (once
/// per period).
pub async fn limits_spent(
    conn: &mut PgConnection,
    limited: &[Uuid],
    version: i64,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if limited.is_empty() {
        return Ok(());
    }
    let reached: Vec<(Uuid, Uuid, Decimal, String, DateTime<Utc>, Decimal)> = sqlx::query_as(
        "WITH touched AS (
             UPDATE api_keys k SET sync_version = $2 WHERE k.id = ANY($1)
             RETURNING k.id, k.account_id, k.limit_credits, k.limit_period, k.limit_alerted_for,
                 key_period_start(k.limit_period, $3) AS started),
         spent AS (
             SELECT t.*, (SELECT coalesce(sum(u.cost), 0) FROM usage_records u
                          WHERE u.key_id = t.id AND u.admitted_at >= t.started) AS spent
             FROM touched t)
         SELECT id, account_id, limit_credits, limit_period, started, spent FROM spent
         WHERE spent >= limit_credits AND limit_alerted_for IS DISTINCT FROM started",
    )
    .bind(limited)
    .bind(version)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    for (key, account, credits, period, started, spent) in reached {
        sqlx::query("UPDATE api_keys SET limit_alerted_for = $2 WHERE id = $1")
            .bind(key)
            .bind(started)
            .execute(&mut *conn)
            .await?;
        let reached = LimitReached {
            key,
            account,
            credits,
            period,
            started,
            spent,
        };
        reached.emit(conn, &version.to_string(), now).await?;
    }
    Ok(())
}

/// Keys a gateway refused for their limit (its hold report says which): `key.limit_reached` for
/// each limited key not yet told this period. Under spend control `reserve` this is how a key
/// whose last request did not fit is told, its spend short of the limit.
pub async fn limits_refused(
    conn: &mut PgConnection,
    keys: &[Uuid],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let due: Vec<(Uuid, Uuid, Decimal, String, DateTime<Utc>, Decimal)> = sqlx::query_as(
        "WITH told AS (
             UPDATE api_keys k SET limit_alerted_for = key_period_start(k.limit_period, $2)
             WHERE k.id = ANY($1) AND k.limit_credits IS NOT NULL
               AND k.limit_alerted_for IS DISTINCT FROM key_period_start(k.limit_period, $2)
             RETURNING k.id, k.account_id, k.limit_credits, k.limit_period,
                 key_period_start(k.limit_period, $2) AS started)
         SELECT t.*, (SELECT coalesce(sum(u.cost), 0) FROM usage_records u
                      WHERE u.key_id = t.id AND u.admitted_at >= t.started)
         FROM told t",
    )
    .bind(keys)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    for (key, account, credits, period, started, spent) in due {
        let reached = LimitReached {
            key,
            account,
            credits,
            period,
            started,
            spent,
        };
        reached.emit(conn, "refused", now).await?;
    }
    Ok(())
}

/// A key whose period's spend reached its limit, or whose requests no longer fit what is left.
struct LimitReached {
    key: Uuid,
    account: Uuid,
    credits: Decimal,
    period: String,
    started: DateTime<Utc>,
    spent: Decimal,
}

impl LimitReached {
    async fn emit(&self, conn: &mut PgConnection, why: &str, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
        let resets = LimitPeriod::parse(&self.period).and_then(|p| p.bounds(now).1);
        let data = serde_json::json!({
            "account_id": self.account,
            "key_id": self.key,
            "limit": { "credits": money::plain(self.credits), "period": self.period },
            "spend_this_period": money::plain(self.spent),
            "period_resets_at": resets,
        });
        // Once per period is `limit_alerted_for`'s work; the key names this crossing.
        let dedupe = format!(
            "{}:{}:{}:{why}",
            events::KEY_LIMIT_REACHED,
            self.key,
            self.started.timestamp()
        );
        events::emit(conn, self.account, events::KEY_LIMIT_REACHED, &dedupe, data, now).await?;
        Ok(())
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key, patch_key))
}
