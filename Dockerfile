# syntax=docker/dockerfile:1.7
# The coverwatch image: `coverwatch serve` on a distroless runtime (no shell, no package manager)
# as a non-root user. Build it with `.ci/docker-build` (or `docker build -t coverwatch .`).
# Configuration comes from /etc/coverwatch/coverwatch.toml when mounted, then COVERWATCH_*
# variables; see "Running in production" in the README.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep crates and compiled dependencies between builds; the binary is copied out
# of the cached target directory in the same step, since the mount is gone afterwards. Without the
# `sandbox` feature: the image is for production, carries no vendor simulators, and refuses to
# start until a vendor is configured (COVERWATCH_VENDORS__<VENDOR>__…).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p coverwatch --bin coverwatch --no-default-features \
    && install -D -m 0755 target/release/coverwatch /out/coverwatch \
    && mkdir -p /out/data

# Debian 12 like the builder, so the binary finds the glibc it was linked against. The `cc`
# variant carries libgcc_s; TLS is rustls, so no OpenSSL is needed.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/coverwatch /usr/local/bin/coverwatch
# A writable working directory for a trial run on SQLite (the database file and a development
# key file are created there); production uses PostgreSQL and `encryption_keys`.
COPY --from=builder --chown=65532:65532 /out/data /var/lib/coverwatch
WORKDIR /var/lib/coverwatch
ENV COVERWATCH_CONFIG=/etc/coverwatch/coverwatch.toml \
    COVERWATCH_GRPC_ADDR=0.0.0.0:50051 \
    COVERWATCH_HTTP_ADDR=0.0.0.0:8080 \
    COVERWATCH_LOG_FORMAT=json
EXPOSE 50051 8080
USER 65532:65532
# No curl in this image: the binary asks its own webhook listener for /readyz.
HEALTHCHECK --interval=10s --timeout=6s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/coverwatch", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/coverwatch"]
CMD ["serve"]
