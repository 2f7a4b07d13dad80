//! Tokens the control plane generates when none is configured: 256 random bits in hex, written
//! once (mode 0600) under the data directory and read back at every start.

use std::path::{Path, PathBuf};

use rand::RngCore;

/// The shortest token accepted, given or read back.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why a token cannot be used or kept.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The token given is unusable: the reason, to be named with its variable.
    #[error("{0}")]
    Invalid(String),
    /// The token file cannot be read or written, or holds an unusable token.
    #[error("{0}")]
    Io(String),
}

/// Where a generated token is kept.
pub fn token_path(data_dir: &Path, key: &str) -> PathBuf {
    data_dir.join(key.to_ascii_lowercase())
}

/// The token of `key`: the one given, else the one kept under `data_dir`, else a new one, kept.
pub fn resolve(key: &str, given: Option<&str>, data_dir: &Path) -> Result<String, SecretError> {
    if let Some(t) = given {
        return check(t.trim()).map(str::to_owned).map_err(SecretError::Invalid);
    }
    let path = token_path(data_dir, key);
    match std::fs::read_to_string(&path) {
        Ok(t) => check(t.trim()).map(str::to_owned).map_err(|reason| {
            SecretError::Io(format!(
                "{}: {key}: {reason}; delete it to generate a new one",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = generate();
            write_secret(&path, &token)
                .map_err(|e| SecretError::Io(format!("cannot keep {key} in {}: {e}", path.display())))?;
            if key == "ADMIN_TOKEN" {
                // Printed once, at generation, as the contract says; never logged afterwards.
                println!("generated ADMIN_TOKEN={token} (kept in {})", path.display());
            } else {
                println!("generated {key}; it is kept in {}", path.display());
            }
            Ok(token)
        }
        Err(e) => Err(SecretError::Io(format!("cannot read {}: {e}", path.display()))),
    }
}

/// The token if usable, else why not.
fn check(t: &str) -> Result<&str, String> {
    if t.len() < MIN_TOKEN_LEN {
        return Err(format!("must be at least {MIN_TOKEN_LEN} characters"));
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces".to_owned());
    }
    Ok(t)
}

/// 32 random bytes, hex: 256 bits.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn write_secret(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(value.as_bytes())?;
    file.write_all(b"\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::{resolve, token_path};
    use crate::config::tests::temp_dir;
    use crate::config::RawConfig;

    #[test]
    fn generated_tokens_are_kept_private_and_reused() {
        let dir = temp_dir();
        let mut s = RawConfig::default();
        s.set("DATA_DIR", &dir.display().to_string());
        let first = s.clone().into_config().unwrap();
        let second = s.into_config().unwrap();
        assert_eq!(first.admin_token, second.admin_token);
        assert_eq!(first.internal_token, second.internal_token);
        assert_ne!(first.admin_token, first.internal_token);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(token_path(&dir, "INTERNAL_TOKEN"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_kept_token_that_is_unusable_names_its_file() {
        let dir = temp_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(token_path(&dir, "ADMIN_TOKEN"), "short\n").unwrap();
        let err = resolve("ADMIN_TOKEN", None, &dir).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "admin_token: ADMIN_TOKEN: must be at least 16 characters; delete it to generate a new one"
            ),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
