# syntax=docker/dockerfile:1
# stockpipe: the host and its guests, built in one stage, run from a slim image as a non-root user.
#   docker build -t stockpipe .
#   docker run --rm stockpipe run --input /opt/stockpipe/data/stock_data_sample.json --once
#
# Build arguments (the defaults are the public images; CI, which reaches no registry, passes local
# ones — scripts/containers.sh):
#   BUILD_IMAGE    the Rust toolchain image of the build stage
#   RUNTIME_IMAGE  the Debian bookworm image the host runs in
#   ARTIFACTS      `build` (compile here) or `prebuilt`: take the binary and guests a release build
#                  already made from dist/ (dist/stockpipe, dist/guests/{validate,enrich,route}.wasm)
#                  instead of compiling them a second time. The runtime stage is the same either way.
ARG BUILD_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG ARTIFACTS=build

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
# rust-toolchain.toml pins the toolchain and asks for the wasm32-wasip2 target.
COPY rust-toolchain.toml ./
RUN rustup show active-toolchain && rustup target add wasm32-wasip2
COPY . .
# host/build.rs builds the guest components too (target/guests/…).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p stockpipe \
 && mkdir -p /out/guests \
 && strip --strip-debug -o /out/stockpipe target/release/stockpipe \
 && for g in validate enrich route; do \
      cp "target/guests/wasm32-wasip2/release/stockpipe_guest_${g}.wasm" "/out/guests/${g}.wasm"; \
    done

# The same layout as the build stage's /out, from a release build made outside (glibc ≤ bookworm's
# 2.36), its binary stripped the same way (`strip --strip-debug`: function names stay for
# backtraces, line tables go).
FROM scratch AS prebuilt
COPY dist/stockpipe /out/stockpipe
COPY dist/guests /out/guests

FROM ${ARTIFACTS} AS artifacts

FROM ${RUNTIME_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /opt/stockpipe stockpipe
COPY --from=artifacts /out/stockpipe /usr/local/bin/stockpipe
# The guests the host starts with; a volume over this directory lets them be hot-swapped.
COPY --from=artifacts --chown=stockpipe /out/guests /opt/stockpipe/guests
COPY sql /opt/stockpipe/sql
COPY data /opt/stockpipe/data
COPY stockpipe.example.toml /opt/stockpipe/stockpipe.example.toml
COPY docker/stockpipe.toml /etc/stockpipe/stockpipe.toml
USER stockpipe
WORKDIR /opt/stockpipe
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=5 \
    CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["stockpipe"]
CMD ["run", "--config", "/etc/stockpipe/stockpipe.toml"]
