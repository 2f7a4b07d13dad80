//! `cargo xtask istio [REPOSITORY]`: the filter as the OCI image Istio pulls, and `deploy/istio`
//! with that image pinned by digest, under `target/istio/` (see `tests::istio`).

use crate::shell::{self, step, Result};
use crate::tools;

/// Where the image is pushed when no repository is given.
const DEFAULT_REPOSITORY: &str = "ghcr.io/example/claudestore-filter";

pub fn run(args: &[String]) -> Result {
    let repository = args.first().map_or(DEFAULT_REPOSITORY, String::as_str);
    step("install rust targets", tools::ensure_rust_targets)?;
    let wasm = step("build the release filter", || tools::build_filters(&["filter"]))?;
    let module = std::fs::read(&wasm).map_err(|e| format!("{}: {e}", wasm.display()))?;
    let out = shell::root().join("target/istio");
    let _ = std::fs::remove_dir_all(&out);
    let image = tests::istio::write_layout(&module, &out.join("image"), "latest")?;
    tests::istio::render(
        &shell::root().join("deploy/istio"),
        &out.join("deploy"),
        repository,
        &image,
    )?;
    println!(
        "\nThe filter's image (OCI layout): {}",
        out.join("image").display()
    );
    println!(
        "  digest sha256:{} (module sha256:{})",
        image.manifest_digest, image.module_digest
    );
    println!("Push it keeping its digest:");
    println!(
        "  skopeo copy oci:{}:latest docker://{repository}:latest",
        out.join("image").display()
    );
    println!("Then apply the manifests that pin it (one of the two):");
    println!("  kubectl apply -k {}", out.join("deploy").display());
    println!(
        "  kubectl apply -k {}",
        out.join("deploy/traffic-extension").display()
    );
    Ok(())
}
