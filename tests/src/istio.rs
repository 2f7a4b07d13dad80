//! The filter as Istio pulls it, built from this repository without a container engine: an OCI
//! image layout (`oci-layout`, `index.json`, `blobs/sha256/`) whose one layer is the module, with
//! the media types of the Wasm OCI image format Istio reads
//! (`application/vnd.module.wasm.content.layer.v1+wasm`); and `deploy/istio` rendered with that
//! image pinned by its digest (`url: oci://REPOSITORY@sha256:...` and the same `sha256`), which
//! the proxy verifies after pulling. `cargo xtask istio` runs both; copy the layout to a
//! registry with a tool that keeps digests (`skopeo copy oci:DIR:TAG docker://REPOSITORY:TAG`).

use std::path::Path;

use sha2::{Digest, Sha256};

pub const LAYER_MEDIA_TYPE: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.module.wasm.config.v1+json";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// What `deploy/istio` carries until rendered (one place per form: its kustomization's patch).
pub const PLACEHOLDER_URL: &str = "oci://ghcr.io/example/claudestore-filter:0.1.0";
pub const PLACEHOLDER_SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The image written: the manifest's digest (what a registry names the image by) and the
/// module's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub manifest_digest: String,
    pub module_digest: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes the layout of an image holding `wasm` under `dir`, tagged `tag`. Deterministic: the
/// same module gives the same digests.
pub fn write_layout(wasm: &[u8], dir: &Path, tag: &str) -> Result<Image, String> {
    let blob = |bytes: &[u8]| -> Result<String, String> {
        let digest = sha256_hex(bytes);
        write(&dir.join("blobs/sha256").join(&digest), bytes)?;
        Ok(digest)
    };
    let module_digest = blob(wasm)?;
    let config = serde_json::to_vec(&serde_json::json!({
        "created": "1970-01-01T00:00:00Z",
        "author": "ClaudeStore",
        "description": "the ClaudeStore billing filter (Proxy-Wasm, wasm32-wasip1)",
    }))
    .map_err(|e| e.to_string())?;
    let config_digest = blob(&config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": format!("sha256:{config_digest}"),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": format!("sha256:{module_digest}"),
            "size": wasm.len(),
            "annotations": { "org.opencontainers.image.title": "plugin.wasm" },
        }],
    }))
    .map_err(|e| e.to_string())?;
    let manifest_digest = blob(&manifest)?;
    write(&dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }],
    }))
    .map_err(|e| e.to_string())?;
    write(&dir.join("index.json"), &index)?;
    Ok(Image {
        manifest_digest,
        module_digest,
    })
}

/// Copies `deploy_istio` to `out` with the module's address and checksum set: the image in
/// `repository` (e.g. `ghcr.io/acme/claudestore-filter`) by digest. Every file that carries the
/// placeholder gets the pinned values; the rest is copied as is.
pub fn render(deploy_istio: &Path, out: &Path, repository: &str, image: &Image) -> Result<(), String> {
    let url = format!("oci://{repository}@sha256:{}", image.manifest_digest);
    let mut dirs = vec![deploy_istio.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let rel = path.strip_prefix(deploy_istio).map_err(|e| e.to_string())?;
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let text = text
                .replace(PLACEHOLDER_URL, &url)
                .replace(PLACEHOLDER_SHA256, &image.manifest_digest);
            write(&out.join(rel), text.as_bytes())?;
        }
    }
    Ok(())
}
