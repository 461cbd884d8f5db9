# syntax=docker/dockerfile:1
# stockpipe: the host and its guests, built in one stage, run from a slim image as a non-root user.
#   docker build -t stockpipe .
#   docker run --rm stockpipe run --input /opt/stockpipe/data/stock_data_sample.json --once

FROM rust:1.95-bookworm AS build
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
 && cp target/release/stockpipe /out/stockpipe \
 && for g in validate enrich route; do \
      cp "target/guests/wasm32-wasip2/release/stockpipe_guest_${g}.wasm" "/out/guests/${g}.wasm"; \
    done

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /opt/stockpipe stockpipe
COPY --from=build /out/stockpipe /usr/local/bin/stockpipe
# The guests the host starts with; a volume over this directory lets them be hot-swapped.
COPY --from=build --chown=stockpipe /out/guests /opt/stockpipe/guests
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
