//! Forms that change something: posted once, answered with a redirect, their result shown once.
//!
//! Every such form carries, beside the session's CSRF token, a fresh random single-use token
//! ([`fields`]). Its first submission claims it in `form_submissions` ([`Submitted`]), makes the
//! change and redirects (303) to the page that shows the result, `?done=ID` ([`Claim::finish`]). A
//! second submission of the same token (a refresh of the result page after a POST, a double click,
//! the Back button and submit again) changes nothing: it waits for the first to finish and is sent
//! to the same result. A submission that fails releases its token, so that correcting the form and
//! sending it again is a new attempt (nothing was changed by the failed one).
//!
//! A result may carry a secret to show once (a new API key, a password link). It is kept sealed
//! with a key derived from the session's token, which the database does not hold (only its hash),
//! and cleared the first time the result page shows it: a refresh of that page shows the notice
//! without the secret.

use axum::extract::{FromRequest, Request};
use axum::http::Uri;
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{Hmac, Mac};
use maud::{html, Markup};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::html::csrf_field;
use super::session::{new_token, parse_form, posted_body, token_hash, Session};
use super::{PageError, PageResult};
use crate::state::AppState;

/// How long a second submission waits for the first one to finish.
const WAIT_FOR_FIRST: std::time::Duration = std::time::Duration::from_secs(10);

/// The hidden fields of a form that changes something: the CSRF token and a fresh form token.
pub fn fields(csrf: &str) -> Markup {
    html! {
        (csrf_field(csrf))
        input type="hidden" name="form_token" value=(new_token());
    }
}

#[derive(Deserialize)]
struct TokenOnly {
    #[serde(default)]
    form_token: String,
}

/// A posted form whose CSRF token was checked and whose single-use token is now claimed by this
/// request. The handler makes the change and ends with [`Claim::finish`].
pub struct Submitted<S, T> {
    pub session: S,
    pub form: T,
    pub claim: Claim,
}

impl<S: Session + Send, T: DeserializeOwned + Send> FromRequest<AppState> for Submitted<S, T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (session, bytes) = posted_body::<S>(req, state).await?;
        let token: TokenOnly = parse_form(&bytes)?;
        // An unreadable form claims nothing: sending it corrected is its first submission.
        let form: T = parse_form(&bytes)?;
        let claim = Claim::take(state, session.session_token(), &token.form_token, &bytes).await?;
        Ok(Self { session, form, claim })
    }
}

/// This request's hold on a form token.
pub struct Claim {
    id: Uuid,
    token_hash: String,
    session_token: String,
}

/// What a form did: the page that shows it, the result in words, and a secret to show once.
pub struct Done {
    location: String,
    notice: String,
    secret: Option<String>,
}

impl Done {
    pub fn to(location: impl Into<String>, notice: impl Into<String>) -> Self {
        Self {
            location: location.into(),
            notice: notice.into(),
            secret: None,
        }
    }

    pub fn with_secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }
}

impl Claim {
    async fn take(state: &AppState, session_token: &str, token: &str, body: &[u8]) -> PageResult<Claim> {
        if token.len() < 16 || token.len() > 128 {
            return Err(PageError::BadRequest(
                "This form is out of date. Reload the page and fill it in again.".into(),
            ));
        }
        let hash = token_hash(token);
        let session_hash = token_hash(session_token);
        let body_hash = hex::encode(Sha256::digest(body));
        sqlx::query("DELETE FROM form_submissions WHERE created_at < now() - interval '1 day'")
            .execute(&state.pool)
            .await?;
        let started = std::time::Instant::now();
        loop {
            let id = Uuid::new_v4();
            let claimed: Option<Uuid> = sqlx::query_scalar(
                "INSERT INTO form_submissions (token_hash, id, session_hash, body_hash) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (token_hash) DO NOTHING RETURNING id",
            )
            .bind(&hash)
            .bind(id)
            .bind(&session_hash)
            .bind(&body_hash)
            .fetch_optional(&state.pool)
            .await?;
            if claimed.is_some() {
                return Ok(Claim {
                    id,
                    token_hash: hash,
                    session_token: session_token.to_owned(),
                });
            }
            // Sent before: its result once it has one. A row gone meanwhile was a failed first
            // attempt that released the token: this one is the next attempt.
            let earlier: Option<(String, Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT session_hash, CASE WHEN done_at IS NOT NULL THEN location END, body_hash
                 FROM form_submissions WHERE token_hash = $1",
            )
            .bind(&hash)
            .fetch_optional(&state.pool)
            .await?;
            match earlier {
                Some((owner, _, _)) if owner != session_hash => return Err(PageError::Csrf),
                // The same form with other values: its first values are done, these are not.
                Some((_, Some(location), sent)) if sent.as_deref() != Some(body_hash.as_str()) => {
                    return Err(PageError::Edited(location))
                }
                Some((_, Some(location), _)) => return Err(PageError::Again(location)),
                Some((_, None, _)) if started.elapsed() > WAIT_FOR_FIRST => {
                    return Err(PageError::BadRequest(
                        "This form was already sent and is still being processed. Reload the page in a \
                         moment to see the result."
                            .into(),
                    ))
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }

    /// The end of the handler: on success the result is recorded and the browser redirected to
    /// it; on failure the token is released and the error shown.
    pub async fn finish(self, state: &AppState, result: PageResult<Done>) -> PageResult<Response> {
        let done = match result {
            Ok(done) => done,
            Err(e) => {
                self.release(state).await;
                return Err(e);
            }
        };
        let sep = if done.location.contains('?') { '&' } else { '?' };
        let location = format!("{}{sep}done={}", done.location, self.id);
        let sealed = done
            .secret
            .map(|s| seal(&self.session_token, self.id, s.as_bytes()));
        // The change is made: its result must not be reported as a failure. The record is
        // retried; if it still cannot be written, the browser goes to the page anyway (it shows
        // the change, without the notice), and a resend of the form waits, then says it is being
        // processed, rather than making the change again.
        for attempt in 1..=3 {
            let recorded = sqlx::query(
                "UPDATE form_submissions SET done_at = now(), location = $2, notice = $3, sealed = $4
                 WHERE token_hash = $1",
            )
            .bind(&self.token_hash)
            .bind(&location)
            .bind(&done.notice)
            .bind(&sealed)
            .execute(&state.pool)
            .await;
            match recorded {
                Ok(_) => break,
                Err(e) if attempt == 3 => {
                    tracing::error!(error = %e, "a form's result was not recorded; its change was made");
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
        Ok(Redirect::to(&location).into_response())
    }

    /// Gives the token back: nothing was changed, and sending the form again is a new attempt.
    pub async fn release(self, state: &AppState) {
        let released = sqlx::query("DELETE FROM form_submissions WHERE token_hash = $1 AND done_at IS NULL")
            .bind(&self.token_hash)
            .execute(&state.pool)
            .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, "a failed form's token was not released; resending it waits for it");
        }
    }
}

/// XOR with HMAC-SHA256(session token, label, id, block) blocks: only the session's cookie
/// unseals it (the database holds the token's hash, not the token). The same call unseals.
fn seal(session_token: &str, id: Uuid, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for (i, chunk) in data.chunks(32).enumerate() {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(session_token.as_bytes()) else {
            return Vec::new();
        };
        mac.update(b"claudestore form secret v1\0");
        mac.update(id.as_bytes());
        mac.update(&u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes());
        let block = mac.finalize().into_bytes();
        out.extend(chunk.iter().zip(block.iter()).map(|(a, b)| a ^ b));
    }
    out
}

/// A form's result as its page shows it: the notice, and the secret the first time only.
pub struct Outcome {
    pub notice: String,
    pub secret: Option<String>,
}

/// The `done` parameter of a page's address, if it is a result id (anything else is ignored).
pub fn done_id(uri: &Uri) -> Option<Uuid> {
    let query = uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "done")
        .and_then(|(_, v)| Uuid::parse_str(&v).ok())
}

/// The result `?done=` names, if it is this session's; its secret is cleared as it is read.
pub async fn outcome(state: &AppState, session_token: &str, uri: &Uri) -> PageResult<Option<Outcome>> {
    let Some(id) = done_id(uri) else {
        return Ok(None);
    };
    let row: Option<(Option<String>, Option<Vec<u8>>)> = sqlx::query_as(
        "WITH shown AS (
             SELECT token_hash, notice, sealed FROM form_submissions
             WHERE id = $1 AND session_hash = $2 AND done_at IS NOT NULL FOR UPDATE)
         UPDATE form_submissions f SET sealed = NULL FROM shown
         WHERE f.token_hash = shown.token_hash RETURNING shown.notice, shown.sealed",
    )
    .bind(id)
    .bind(token_hash(session_token))
    .fetch_optional(&state.pool)
    .await?;
    Ok(row.map(|(notice, sealed)| Outcome {
        notice: notice.unwrap_or_default(),
        secret: sealed.and_then(|s| String::from_utf8(seal(session_token, id, &s)).ok()),
    }))
}

/// The notice of a result, at the top of the page it was sent to.
pub fn notice(outcome: Option<&Outcome>) -> Markup {
    html! {
        @if let Some(o) = outcome {
            @if !o.notice.is_empty() { p.notice.ok #done role="status" { (o.notice) } }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_session_and_id() {
        let (session, other) = (new_token(), new_token());
        let id = Uuid::new_v4();
        let secret = "sk-cs-0123456789abcdef0123456789abcdef0123456789abcdef-long-enough";
        let sealed = seal(&session, id, secret.as_bytes());
        assert_eq!(sealed.len(), secret.len());
        assert!(!sealed
            .windows(8)
            .any(|w| secret.as_bytes().windows(8).any(|s| s == w)));
        assert_eq!(seal(&session, id, &sealed), secret.as_bytes());
        assert_ne!(seal(&other, id, &sealed), secret.as_bytes());
        assert_ne!(seal(&session, Uuid::new_v4(), &sealed), secret.as_bytes());
    }

    #[test]
    fn only_a_uuid_done_parameter_names_a_result() {
        let id = Uuid::new_v4();
        let uri: Uri = format!("/dashboard/keys?x=1&done={id}").parse().unwrap();
        assert_eq!(done_id(&uri), Some(id));
        for bad in [
            "/dashboard/keys",
            "/dashboard/keys?done=abc",
            "/dashboard/keys?done=",
        ] {
            assert_eq!(done_id(&bad.parse().unwrap()), None, "{bad}");
        }
    }
}
