# The ClaudeStore gateway's images, built from this repository: the same binaries, Envoy template
# and filter as `cargo xtask up`. Targets: control-plane, fake-upstream, envoy.
FROM rust:1-bookworm AS build
RUN rustup target add wasm32-wasip1
WORKDIR /src
COPY . .
RUN cargo build --release -p control-plane -p tests --bins \
 && cargo build --profile wasm -p filter --target wasm32-wasip1

FROM debian:bookworm-slim AS control-plane
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/control-plane /usr/local/bin/control-plane
ENV DATA_DIR=/var/lib/claudestore
ENTRYPOINT ["control-plane"]

FROM debian:bookworm-slim AS fake-upstream
COPY --from=build /src/target/release/fake-anthropic /usr/local/bin/fake-anthropic
ENTRYPOINT ["fake-anthropic"]

FROM envoyproxy/envoy:v1.40-latest AS envoy
COPY --from=build /src/target/wasm32-wasip1/wasm/filter.wasm /etc/claudestore/filter.wasm
COPY envoy/envoy.yaml /etc/claudestore/envoy.yaml.template
COPY envoy/render.sh /etc/claudestore/render.sh
ENTRYPOINT ["/bin/sh", "/etc/claudestore/render.sh"]

# The filter as Istio pulls it (WasmPlugin / TrafficExtension `url: oci://...`): an image whose
# only layer holds the module as /plugin.wasm.
FROM scratch AS wasm-plugin
COPY --from=build /src/target/wasm32-wasip1/wasm/filter.wasm ./plugin.wasm
