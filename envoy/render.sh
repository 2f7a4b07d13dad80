#!/bin/sh
# Renders envoy.yaml from the environment (the same variables and defaults as `cargo xtask up`)
# and execs Envoy. Used by the container image of docker-compose.yml; `cargo xtask up` renders the
# same template in Rust (tests/src/stack.rs).
set -eu
template=${ENVOY_TEMPLATE:-/etc/claudestore/envoy.yaml.template}
out=${ENVOY_CONFIG:-/tmp/envoy.yaml}
: "${INTERNAL_TOKEN:?INTERNAL_TOKEN must be set (the control plane's internal token)}"

if [ -z "${UPSTREAM_URL:-}" ] && [ -z "${UPSTREAM_API_KEY:-}" ]; then
  UPSTREAM_URL="http://127.0.0.1:${FAKE_UPSTREAM_PORT:-10001}"   # demo mode: the fake upstream
fi
url=${UPSTREAM_URL:-https://api.anthropic.com}
case "$url" in
  https://*) tls=true; rest=${url#https://}; default_port=443 ;;
  http://*) tls=false; rest=${url#http://}; default_port=80 ;;
  *) echo "UPSTREAM_URL $url must start with http:// or https://" >&2; exit 1 ;;
esac
rest=${rest%/}
case "$rest" in */*) echo "UPSTREAM_URL $url: a base path is not supported" >&2; exit 1 ;; esac
case "$rest" in
  *:*) host=${rest%:*}; port=${rest##*:} ;;
  *) host=$rest; port=$default_port ;;
esac

plugin="{\"internal_token\":\"${INTERNAL_TOKEN}\",\"fail_mode\":\"${FAIL_MODE:-open}\",\"price_factor\":\"${PRICE_FACTOR:-0.70}\",\"sync_period_ms\":250,\"flush_period_ms\":500${UPSTREAM_API_KEY:+,\"upstream_api_key\":\"${UPSTREAM_API_KEY}\"}}"
# The template wants the configuration as a JSON string literal (quotes included).
quoted=$(printf '%s' "$plugin" | sed 's/\\/\\\\/g; s/"/\\"/g')
plugin_literal="\"$quoted\""

escape() { printf '%s' "$1" | sed 's/[&|\\]/\\&/g'; }
sed -e "s|\${GATEWAY_PORT}|$(escape "${GATEWAY_PORT:-10000}")|g" \
    -e "s|\${ENVOY_ADMIN_PORT}|$(escape "${ENVOY_ADMIN_PORT:-9901}")|g" \
    -e "s|\${CONTROL_PORT}|$(escape "${CONTROL_PORT:-8080}")|g" \
    -e "s|\${CONTROL_EXTRA_ENDPOINTS}||g" \
    -e "s|\${UPSTREAM_HOST}|$(escape "$host")|g" \
    -e "s|\${UPSTREAM_PORT}|$(escape "$port")|g" \
    -e "s|\${UPSTREAM_TLS}|$tls|g" \
    -e "s|\${WASM_PATH}|$(escape "${WASM_PATH:-/etc/claudestore/filter.wasm}")|g" \
    -e "s|\${PLUGIN_CONFIG}|$(escape "$plugin_literal")|g" \
    "$template" > "$out"
chmod 600 "$out"
if grep -q '\${' "$out"; then echo "unrendered placeholder in $out" >&2; exit 1; fi
# A drain answers with `connection: close` at once and closes the listeners a second later (see
# docs/operations.md, "Loss window").
exec envoy -c "$out" --concurrency "${ENVOY_CONCURRENCY:-2}" --drain-time-s 1 --drain-strategy immediate "$@"
