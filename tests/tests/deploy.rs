//! `deploy/` checked without a cluster: every manifest parses; the Kubernetes and Istio resources
//! carry what their APIs require (Istio's from its CRD definitions: `url` required and a 64-hex
//! `sha256`, exactly one of `wasm` or `lua` in a TrafficExtension, `valueFrom` HOST or INLINE...);
//! the plugin configuration embedded in the Istio manifests is accepted by the filter's own
//! parser; and ports, paths, routes, variable and stat names agree with the control plane, the
//! Envoy template and each other. No secret appears in clear.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(r) => r.parse::<f64>().map_or(Value::Null, |f| json!(f)),
        Yaml::Integer(i) => json!(i),
        Yaml::String(s) => json!(s),
        Yaml::Boolean(b) => json!(b),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        other => panic!("a non-string key {other:?}"),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Null => Value::Null,
        other => panic!("unsupported YAML node {other:?}"),
    }
}

/// Every YAML document of every `.yaml` file under `deploy/`, by file.
fn manifests() -> BTreeMap<PathBuf, Vec<Value>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root().join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let docs = YamlLoader::load_from_str(&text)
                    .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
                out.insert(path, docs.iter().map(to_json).collect());
            }
        }
    }
    out
}

fn resources() -> Vec<(PathBuf, Value)> {
    manifests()
        .into_iter()
        .flat_map(|(p, docs)| docs.into_iter().map(move |d| (p.clone(), d)))
        .filter(|(_, d)| d.get("kind").is_some())
        .collect()
}

fn one<'a>(all: &'a [(PathBuf, Value)], kind: &str, file: &str) -> &'a Value {
    let found: Vec<&Value> = all
        .iter()
        .filter(|(p, d)| d["kind"] == kind && p.ends_with(file))
        .map(|(_, d)| d)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} in {file}");
    found[0]
}

/// The value a JSON patch (a list of operations) sets at the path ending in `suffix`.
fn patch_value(ops: &Value, suffix: &str) -> Value {
    ops.as_array()
        .unwrap()
        .iter()
        .find(|op| op["path"].as_str().unwrap().ends_with(suffix))
        .map(|op| op["value"].clone())
        .unwrap()
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The Envoy template's value after `key:` on the line that mentions `anchor`, e.g. a route's
/// timeout.
fn envoy_template() -> String {
    std::fs::read_to_string(root().join("envoy/envoy.yaml")).unwrap()
}

#[test]
fn every_manifest_parses_and_names_its_api_kind_and_name() {
    let all = manifests();
    assert!(all.len() >= 10, "{:?}", all.keys());
    for (path, docs) in &all {
        for d in docs {
            if path.file_name().is_some_and(|n| n == "gateway-patch.yaml") {
                continue; // a patch, not a resource
            }
            let kind = d["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: no kind", path.display()));
            assert!(
                d["apiVersion"].is_string(),
                "{}: {kind} without apiVersion",
                path.display()
            );
            if kind != "Kustomization" {
                assert!(
                    d["metadata"]["name"].is_string(),
                    "{}: {kind} without a name",
                    path.display()
                );
            }
        }
    }
    // Each kustomization lists files (or directories) that exist.
    for (path, docs) in &all {
        for d in docs.iter().filter(|d| d["kind"] == "Kustomization") {
            for r in d["resources"].as_array().unwrap() {
                let target = path.parent().unwrap().join(r.as_str().unwrap());
                assert!(
                    target.exists(),
                    "{}: {} missing",
                    path.display(),
                    target.display()
                );
            }
        }
    }
}

#[test]
fn the_control_plane_deployment_is_two_hardened_replicas_probed_on_its_own_routes() {
    let all = resources();
    let dep = one(&all, "Deployment", "control-plane.yaml");
    assert_eq!(dep["apiVersion"], "apps/v1");
    let spec = &dep["spec"];
    assert_eq!(spec["replicas"], 2);
    let labels = &spec["template"]["metadata"]["labels"];
    for (k, v) in spec["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the selector must match the pod's labels");
    }
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod["terminationGracePeriodSeconds"].as_i64().unwrap() >= 10);
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert!(
        c["resources"]["requests"]["memory"].is_string() && c["resources"]["limits"]["memory"].is_string()
    );
    assert!(c["lifecycle"]["preStop"].is_object(), "graceful shutdown");
    // Probes on the control plane's routes, on its port.
    let port = c["ports"][0]["containerPort"].as_i64().unwrap();
    let config = one(&all, "ConfigMap", "config.yaml");
    assert_eq!(config["data"]["CONTROL_PORT"], port.to_string());
    let doc = control_plane::api().into_openapi();
    let paths: Vec<&String> = doc.paths.paths.keys().collect();
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path);
        assert!(
            paths.iter().any(|p| *p == path),
            "{path} is not a control plane route"
        );
        assert_eq!(c[probe]["httpGet"]["port"], c["ports"][0]["name"]);
    }
    // Every variable is one the control plane reads; the secrets come from a Secret only.
    let keys = control_plane::config::KEYS;
    for name in config["data"].as_object().unwrap().keys() {
        assert!(
            keys.contains(&name.as_str()),
            "{name} is not a control plane variable"
        );
    }
    let env = c["env"].as_array().unwrap();
    for e in env {
        let name = e["name"].as_str().unwrap();
        assert!(keys.contains(&name), "{name} is not a control plane variable");
        assert!(e.get("value").is_none(), "{name} in clear");
        assert!(
            e["valueFrom"]["secretKeyRef"]["name"].is_string(),
            "{name} not from a Secret"
        );
    }
    for secret in [
        "DATABASE_URL",
        "ADMIN_TOKEN",
        "INTERNAL_TOKEN",
        "WEBHOOK_SIGNING_KEY",
        "STRIPE_SECRET_KEY",
    ] {
        assert!(env.iter().any(|e| e["name"] == secret), "{secret} not set");
        assert!(config["data"].get(secret).is_none(), "{secret} in the ConfigMap");
    }
    assert!(
        all.iter().all(|(_, d)| d["kind"] != "Secret"),
        "no Secret manifest: operators create it"
    );
    // The Service and the PodDisruptionBudget select these pods, on the container's port.
    let svc = one(&all, "Service", "control-plane.yaml");
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v);
    }
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], c["ports"][0]["name"]);
    assert_eq!(svc["spec"]["ports"][0]["port"], port);
    let pdb = one(&all, "PodDisruptionBudget", "control-plane.yaml");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        spec["selector"]["matchLabels"]
    );
    assert!(pdb["spec"]["minAvailable"].as_i64().unwrap() >= 1);
}

/// The filter's plugin configuration of a WasmPlugin or TrafficExtension, checked against the
/// CRD's required fields, and parsed by the filter with the VM environment it names.
fn check_wasm(w: &Value, what: &str) -> filter_core::config::Config {
    let url = w["url"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: url is required"));
    assert!(url.starts_with("oci://"), "{what}: the module is an OCI image");
    assert!(
        is_hex64(w["sha256"].as_str().unwrap()),
        "{what}: sha256 pinned (64 hex)"
    );
    assert_eq!(w["failStrategy"], "FAIL_CLOSE", "{what}: never serve unbilled");
    assert_eq!(w["type"], "HTTP");
    assert!(matches!(
        w["imagePullPolicy"].as_str(),
        Some("IfNotPresent" | "Always")
    ));
    let env = w["vmConfig"]["env"].as_array().unwrap();
    for e in env {
        assert!(
            matches!(e["valueFrom"].as_str(), Some("HOST")),
            "{what}: {e} must come from the proxy"
        );
        assert!(e.get("value").is_none(), "{what}: {e} in clear");
    }
    let config = &w["pluginConfig"];
    for secret in ["internal_token", "upstream_api_key"] {
        assert!(config.get(secret).is_none(), "{what}: {secret} in clear");
        let var = config[format!("{secret}_env")].as_str().unwrap();
        assert!(
            env.iter().any(|e| e["name"] == var),
            "{what}: {var} is not given to the VM"
        );
        // The proxy's environment, as the gateway patch sets it.
        std::env::set_var(var, format!("test-{secret}"));
    }
    let bytes = serde_json::to_vec(config).unwrap();
    filter_core::config::Config::from_json(&bytes)
        .unwrap_or_else(|e| panic!("{what}: the filter refuses its configuration: {e}"))
}

#[test]
fn the_istio_plugin_is_pinned_secret_free_and_accepted_by_the_filter() {
    let all = resources();
    let plugin = one(&all, "WasmPlugin", "wasmplugin.yaml");
    assert_eq!(plugin["apiVersion"], "extensions.istio.io/v1alpha1");
    assert_eq!(
        plugin["spec"]["selector"]["matchLabels"]["istio"],
        "ingressgateway"
    );
    let a = check_wasm(&plugin["spec"], "WasmPlugin");
    let ext = one(&all, "TrafficExtension", "trafficextension.yaml");
    assert_eq!(ext["apiVersion"], "extensions.istio.io/v1alpha1");
    let spec = &ext["spec"];
    assert!(
        spec.get("wasm").is_some() != spec.get("lua").is_some(),
        "exactly one of wasm or lua"
    );
    assert!(!(spec.get("selector").is_some() && spec.get("targetRefs").is_some()));
    assert_eq!(spec["selector"]["matchLabels"]["istio"], "ingressgateway");
    let b = check_wasm(&spec["wasm"], "TrafficExtension");
    assert_eq!(
        a.summary(),
        b.summary(),
        "the two forms configure the filter the same way"
    );
    assert_eq!(plugin["spec"]["pluginConfig"], spec["wasm"]["pluginConfig"]);
    // The kustomization patches pin the same module in both forms.
    let pins: Vec<Value> = manifests()
        .into_iter()
        .filter(|(p, _)| p.ends_with("kustomization.yaml"))
        .flat_map(|(_, docs)| docs)
        .flat_map(|d| d["patches"].as_array().cloned().unwrap_or_default())
        .map(|p| to_json(&YamlLoader::load_from_str(p["patch"].as_str().unwrap()).unwrap()[0]))
        .collect();
    assert_eq!(pins.len(), 2);
    let value = patch_value;
    assert_eq!(value(&pins[0], "/url"), value(&pins[1], "/url"));
    assert_eq!(value(&pins[0], "/sha256"), value(&pins[1], "/sha256"));
    assert!(is_hex64(value(&pins[0], "/sha256").as_str().unwrap()));
}

#[test]
fn istio_routes_and_clusters_agree_with_the_control_plane_and_the_envoy_template() {
    let all = resources();
    let plugin = &one(&all, "WasmPlugin", "wasmplugin.yaml")["spec"]["pluginConfig"];
    let svc = one(&all, "Service", "control-plane.yaml");
    let ns = one(&all, "Namespace", "namespace.yaml")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let name = svc["metadata"]["name"].as_str().unwrap();
    let port = svc["spec"]["ports"][0]["port"].as_i64().unwrap();
    let host = format!("{name}.{ns}.svc.cluster.local");
    // The cluster the filter calls is the one Istio builds for the control plane's Service.
    assert_eq!(
        plugin["control_plane_cluster"],
        format!("outbound|{port}||{host}")
    );
    assert_eq!(plugin["control_plane_authority"], host.as_str());
    let dr = all
        .iter()
        .find(|(_, d)| d["kind"] == "DestinationRule" && d["spec"]["host"] == host.as_str())
        .map(|(_, d)| d)
        .expect("a DestinationRule for the control plane");
    assert!(
        dr["spec"]["trafficPolicy"]["outlierDetection"].is_object(),
        "a failing replica is ejected"
    );
    // Routes: /v1/me and /v1/me/ to the control plane (as in envoy/envoy.yaml), the rest upstream
    // with the template's route timeout.
    let template = envoy_template();
    let vs = one(&all, "VirtualService", "routing.yaml");
    let http = vs["spec"]["http"].as_array().unwrap();
    let cp = &http[0];
    assert_eq!(cp["route"][0]["destination"]["host"], host.as_str());
    assert_eq!(cp["route"][0]["destination"]["port"]["number"], port);
    let matches: Vec<String> = cp["match"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["uri"].to_string())
        .collect();
    assert!(
        template.contains("match: { path: /v1/me }")
            && matches.contains(&json!({"exact": "/v1/me"}).to_string())
    );
    assert!(
        template.contains("match: { prefix: /v1/me/ }")
            && matches.contains(&json!({"prefix": "/v1/me/"}).to_string())
    );
    let upstream = &http[1];
    let timeout = upstream["timeout"].as_str().unwrap();
    assert!(
        template.contains(&format!("timeout: {timeout}")),
        "the upstream route timeout differs from the template's"
    );
    let upstream_host = upstream["route"][0]["destination"]["host"].as_str().unwrap();
    let se = one(&all, "ServiceEntry", "upstream.yaml");
    assert!(se["spec"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h == upstream_host));
    assert_eq!(se["spec"]["ports"][0]["targetPort"], 443);
    // The gateway's drain waits on the stat the filter defines and the stack's drain reads.
    let patch = std::fs::read_to_string(root().join("deploy/istio/gateway-patch.yaml")).unwrap();
    assert!(
        patch.contains(&tests::stack::DEBIT_GAUGE.replace('.', "\\.")),
        "the drain's gauge"
    );
    assert!(patch.contains("drain_listeners"));
    let patch = to_json(&YamlLoader::load_from_str(&patch).unwrap()[0]);
    let grace = patch["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap();
    let route_timeout: i64 = timeout.trim_end_matches('s').parse().unwrap();
    assert!(
        grace > route_timeout,
        "the gateway's grace period outlasts the longest request"
    );
    let proxy_env = patch["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    for var in [&plugin["internal_token_env"], &plugin["upstream_api_key_env"]] {
        let e = proxy_env
            .iter()
            .find(|e| &e["name"] == var)
            .expect("the proxy gets the variable");
        assert!(e["valueFrom"]["secretKeyRef"].is_object(), "{var} from a Secret");
    }
}

#[test]
fn the_grafana_dashboard_queries_metrics_that_exist() {
    let text = std::fs::read_to_string(root().join("deploy/grafana/claudestore.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    // What docs/metrics.md lists: the control plane's names as exposed, and the filter's Envoy
    // stats under the names Envoy's Prometheus endpoint gives them.
    let docs = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    let mut known: Vec<String> = Vec::new();
    for token in docs.split('`').skip(1).step_by(2) {
        if token.starts_with("claudestore_") {
            known.push(token.to_owned());
        } else if token.contains('.') || token.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            known.push(format!(
                "envoy_wasmcustom_claudestore_{}",
                token.replace('.', "_")
            ));
            known.push(format!("envoy_wasmcustom_claudestore_refused_{token}"));
        }
    }
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    for p in panels {
        assert!(p["gridPos"].is_object() && p["title"].is_string());
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("claudestore_") || w.starts_with("envoy_wasmcustom_claudestore_"))
                .collect();
            assert!(!names.is_empty(), "{expr}");
            for n in names {
                let base = ["_bucket", "_total", "_count", "_sum"]
                    .iter()
                    .fold(n, |n, suffix| n.strip_suffix(suffix).unwrap_or(n));
                assert!(
                    known.iter().any(|k| k == n || k == base),
                    "{n} (in {expr}) is not a documented metric"
                );
            }
        }
    }
}

/// The module image built from the release filter (as `cargo xtask istio` builds it, which
/// `cargo xtask test` builds before the tests) is an OCI image layout Istio pulls, and the rendered
/// manifests pin it by digest in both forms.
#[test]
fn the_module_image_is_an_oci_layout_and_the_rendered_manifests_pin_it() {
    use tests::istio::{render, sha256_hex, write_layout, LAYER_MEDIA_TYPE, PLACEHOLDER_SHA256};
    let wasm_path = root().join("target/wasm32-wasip1/wasm/filter.wasm");
    let wasm = std::fs::read(&wasm_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build it with `cargo build -p filter --target wasm32-wasip1 --profile wasm` \
             (cargo xtask test does)",
            wasm_path.display()
        )
    });
    let out = std::env::temp_dir().join(format!("cs-istio-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let image = write_layout(&wasm, &out.join("image"), "latest").unwrap();
    assert_eq!(
        image,
        write_layout(&wasm, &out.join("again"), "latest").unwrap(),
        "deterministic"
    );
    let read = |rel: &str| std::fs::read(out.join("image").join(rel)).unwrap();
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let bytes = read(&format!("blobs/sha256/{hex}"));
        assert_eq!(sha256_hex(&bytes), hex, "a blob's name is its digest");
        bytes
    };
    let layout: Value = serde_json::from_slice(&read("oci-layout")).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: Value = serde_json::from_slice(&read("index.json")).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(entry["digest"], format!("sha256:{}", image.manifest_digest));
    let manifest_bytes = blob(entry["digest"].as_str().unwrap());
    assert_eq!(entry["size"], manifest_bytes.len());
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "one layer: the module");
    assert_eq!(layers[0]["mediaType"], LAYER_MEDIA_TYPE);
    assert_eq!(
        blob(layers[0]["digest"].as_str().unwrap()),
        wasm,
        "the layer is the module itself"
    );
    assert_eq!(layers[0]["size"], wasm.len());
    blob(manifest["config"]["digest"].as_str().unwrap());

    render(
        &root().join("deploy/istio"),
        &out.join("deploy"),
        "registry.example/cs/filter",
        &image,
    )
    .unwrap();
    let pinned_url = format!(
        "oci://registry.example/cs/filter@sha256:{}",
        image.manifest_digest
    );
    for rel in ["kustomization.yaml", "traffic-extension/kustomization.yaml"] {
        let text = std::fs::read_to_string(out.join("deploy").join(rel)).unwrap();
        let doc = to_json(&YamlLoader::load_from_str(&text).unwrap()[0]);
        let ops =
            to_json(&YamlLoader::load_from_str(doc["patches"][0]["patch"].as_str().unwrap()).unwrap()[0]);
        let value = |suffix: &str| patch_value(&ops, suffix);
        assert_eq!(value("/url"), pinned_url.as_str(), "{rel}");
        assert_eq!(value("/sha256"), image.manifest_digest.as_str(), "{rel}");
        assert!(!text.contains(PLACEHOLDER_SHA256), "{rel}: a placeholder left");
    }
    // The rendered tree is the source tree but for the pin.
    assert!(out.join("deploy/common/routing.yaml").exists());
    let _ = std::fs::remove_dir_all(&out);
}
