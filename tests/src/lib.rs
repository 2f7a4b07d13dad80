//! The end-to-end suite's support code: the fake Anthropic upstream ([`fake`]), also shipped as the
//! `fake-anthropic` binary that `cargo xtask up` runs in demo mode.

pub mod fake;
pub mod istio;
pub mod pg;
pub mod stack;

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> std::path::PathBuf {
    let manifest = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or(manifest.clone(), std::path::Path::to_path_buf)
}
