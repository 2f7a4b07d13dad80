//! Customer passwords: argon2id hashes, verified in constant work whether the email is known or
//! not, hashed off the async threads.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;

use crate::dashboard::{PageError, PageResult};

pub(super) const MIN_PASSWORD: usize = 10;
pub(super) const MAX_PASSWORD: usize = 200;

/// What is wrong with a new password (its length, its repetition, not the email), in words; the
/// rules of both the password link and the password change.
pub(super) fn new_password_problem(password: &str, confirm: &str, email: &str) -> Option<String> {
    let length = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&length) {
        Some(format!(
            "The password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters."
        ))
    } else if password != confirm {
        Some("The two passwords differ.".to_owned())
    } else if password.to_lowercase() == email.to_lowercase() {
        Some("The password must not be your email.".to_owned())
    } else {
        None
    }
}

pub(super) fn hash_password(password: &str) -> Result<String, PageError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| PageError::Internal(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PageError::Internal(format!("argon2: {e}")))
}

pub(super) fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Verifies against a fixed hash when the email is unknown, so both cases take as long.
pub(super) fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a password of anyone").unwrap_or_default())
}

pub(super) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> PageResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PageError::Internal(format!("password hashing task: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_password_is_long_enough_confirmed_and_not_the_email() {
        let problem = new_password_problem;
        assert!(problem("short", "short", "a@b.c").is_some_and(|p| p.contains("10 to 200")));
        assert!(problem("long enough one", "long enough two", "a@b.c").is_some_and(|p| p.contains("differ")));
        assert!(problem("Ada@Example.com", "Ada@Example.com", "ada@example.com")
            .is_some_and(|p| p.contains("email")));
        assert_eq!(problem("long enough one", "long enough one", "a@b.c"), None);
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery").unwrap_or_default();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterY", &h));
        assert!(!verify_password("x", "not a hash"));
    }
}
